//! `[[inputs.linux_sysctl_fs]]`: file-system limits and usage from `/proc/sys/fs` (open
//! files, inodes, dentries, AIO requests, quota and superblocks), Telegraf's schema. See
//! README.md.

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::HostPaths;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "linux_sysctl_fs",
    description: "Linux sysctl fs metrics (open files, inodes, dentries, AIO)",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// Files holding one number, reported under their own name.
const SINGLE: [&str; 6] = [
    "aio-nr",
    "aio-max-nr",
    "dquot-nr",
    "dquot-max",
    "super-nr",
    "super-max",
];

/// Files of tab-separated numbers and the field each column becomes (`""`: not reported).
const LISTS: [(&str, &[&str]); 3] = [
    (
        "inode-state",
        &["inode-nr", "inode-free-nr", "inode-preshrink-nr"],
    ),
    (
        "dentry-state",
        &[
            "dentry-nr",
            "dentry-unused-nr",
            "dentry-age-limit",
            "dentry-want-pages",
        ],
    ),
    ("file-nr", &["file-nr", "", "file-max"]),
];

struct SysctlFs {
    paths: HostPaths,
}

fn build(_opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(SysctlFs {
        paths: ctx.paths.clone(),
    })
}

/// Parses `text`'s tab-separated columns (trailing newlines removed) into `fields`, one per
/// name; extra columns are ignored, missing ones are not reported.
pub fn parse_columns(
    text: &str,
    names: &[&'static str],
    fields: &mut Vec<(&'static str, u64)>,
) -> Result<(), String> {
    for (name, col) in names.iter().zip(text.trim_end_matches('\n').split('\t')) {
        if name.is_empty() {
            continue;
        }
        let v = col
            .parse::<u64>()
            .map_err(|_| format!("{name}: {col:?} is not a number"))?;
        fields.push((name, v));
    }
    Ok(())
}

impl Input for SysctlFs {
    /// Any unreadable or malformed file fails the whole gather (no line), as in Telegraf.
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let mut fields = Vec::new();
        let single = SINGLE.iter().map(|n| (*n, std::slice::from_ref(n)));
        for (file, names) in single.chain(LISTS.iter().map(|(f, n)| (*f, *n))) {
            // A file this kernel lacks is skipped, as in Telegraf.
            let path = self.paths.proc(&format!("sys/fs/{file}"));
            let Some(text) = crate::hostpaths::read_if_exists(&path)? else {
                continue;
            };
            parse_columns(&text, names, &mut fields)
                .map_err(|m| GatherError::malformed(&path, 1, m))?;
        }
        let mut m = acc.metric("linux_sysctl_fs");
        for (k, v) in fields {
            m.add_field(k, v);
        }
        acc.push(m);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_by_name_extra_and_missing_ones() {
        let mut f = Vec::new();
        parse_columns("1\t2\t3\t0\t0\t0\t0\n", LISTS[0].1, &mut f).unwrap();
        assert_eq!(
            f,
            [
                ("inode-nr", 1),
                ("inode-free-nr", 2),
                ("inode-preshrink-nr", 3)
            ]
        );
        let mut f = Vec::new();
        parse_columns("512\t0\t9223372036854775807\n", LISTS[2].1, &mut f).unwrap();
        assert_eq!(f, [("file-nr", 512), ("file-max", 9223372036854775807)]);
        let mut f = Vec::new();
        parse_columns("7\n", LISTS[1].1, &mut f).unwrap();
        assert_eq!(f, [("dentry-nr", 7)]);
        assert!(parse_columns("x\t1\n", LISTS[0].1, &mut Vec::new()).is_err());
        assert!(parse_columns("1 2 3\n", LISTS[0].1, &mut Vec::new()).is_err());
    }
}
