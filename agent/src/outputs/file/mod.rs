//! `[[outputs.file]]`: line protocol to stdout or to files (appended).

use std::fs::{File, OpenOptions};
use std::io::Write;

use super::{Output, OutputSpec, WriteError};
use crate::lineproto::Serializer;
use crate::metric::Metric;
use crate::plugin::BuildContext;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: OutputSpec = OutputSpec {
    name: "file",
    description: "Write line protocol to stdout or files",
    sample_config: include_str!("sample.conf"),
    build,
};

enum Target {
    Stdout,
    File { path: String, file: Option<File> },
}

struct FileOutput {
    targets: Vec<Target>,
    serializer: Serializer,
    buf: Vec<u8>,
}

fn build(opts: &mut Options<'_, '_>, _ctx: &BuildContext<'_>) -> Box<dyn Output> {
    let files = opts
        .opt_strings("files")
        .unwrap_or_else(|| vec!["stdout".to_owned()]);
    if files.is_empty() {
        opts.error_at("files", "must name at least one file or \"stdout\"");
    }
    opts.accepted(&["use_batch_format"]);
    opts.unsupported(&[
        "rotation_interval",
        "rotation_max_size",
        "rotation_max_archives",
        "compression_algorithm",
        "compression_level",
    ]);
    let serializer = serializer_options(opts);
    let targets = files
        .into_iter()
        .map(|f| {
            if f == "stdout" {
                Target::Stdout
            } else {
                Target::File {
                    path: f,
                    file: None,
                }
            }
        })
        .collect();
    Box::new(FileOutput {
        targets,
        serializer,
        buf: Vec::new(),
    })
}

use super::serializer_options;

impl Output for FileOutput {
    fn write(&mut self, metrics: &[Metric]) -> Result<(), WriteError> {
        self.buf.clear();
        for m in metrics {
            self.serializer.write(&mut self.buf, m);
        }
        for t in &mut self.targets {
            match t {
                Target::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&self.buf)
                        .and_then(|_| out.flush())
                        .map_err(|e| WriteError::Retry(format!("stdout: {e}")))?;
                }
                Target::File { path, file } => {
                    if file.is_none() {
                        let f = OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&*path)
                            .map_err(|e| WriteError::Retry(format!("{path}: {e}")))?;
                        *file = Some(f);
                    }
                    if let Some(f) = file
                        && let Err(e) = f.write_all(&self.buf)
                    {
                        *file = None;
                        return Err(WriteError::Retry(format!("{path}: {e}")));
                    }
                }
            }
        }
        Ok(())
    }

    fn close(&mut self) {
        for t in &mut self.targets {
            if let Target::File { file: Some(f), .. } = t {
                let _ = f.sync_data();
            }
        }
    }
}
