//! `linux_sysctl_fs` against this machine's /proc/sys/fs, read before and after our gather.

use super::gather;
use super::uint;

fn columns(name: &str) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/sys/fs/{name}"))
        .unwrap()
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .collect()
}

#[test]
fn sysctl_fs_matches_proc() {
    let file0 = columns("file-nr");
    let lines = gather("[[inputs.linux_sysctl_fs]]\n");
    let file1 = columns("file-nr");
    assert_eq!(lines.len(), 1);
    let m = &lines[0];
    assert_eq!(m.name, "linux_sysctl_fs");
    assert_eq!(uint(m, "file-max"), file0[2]);
    let open = uint(m, "file-nr");
    let (lo, hi) = (file0[0].min(file1[0]), file0[0].max(file1[0]));
    assert!(
        lo.saturating_sub(64) <= open && open <= hi + 64,
        "file-nr {open} vs {lo}..={hi}"
    );
    assert_eq!(uint(m, "aio-max-nr"), columns("aio-max-nr")[0]);
    assert!(uint(m, "inode-nr") >= uint(m, "inode-free-nr"));
    assert!(uint(m, "dentry-nr") >= uint(m, "dentry-unused-nr"));
    assert_eq!(uint(m, "dentry-age-limit"), columns("dentry-state")[2]);
}
