//! InfluxDB line protocol, written exactly as Telegraf's `influx` serializer writes it
//! (spec/telegraf.md §1): tags sorted by key, Go-style shortest floats without exponent,
//! `i` for integers, uints as clamped `i` unless `influx_uint_support`, NaN/Inf fields dropped.

use std::io::Write;

use crate::metric::{FieldValue, Metric};

/// Serializer options, named after Telegraf's `influx_*` keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Serializer {
    /// `influx_uint_support`: write uints with the `u` suffix.
    pub uint_support: bool,
    /// `influx_omit_timestamp`: leave the timestamp out.
    pub omit_timestamp: bool,
    /// `influx_sort_fields`: write fields sorted by key (always on for `--test`).
    pub sort_fields: bool,
}

impl Serializer {
    /// Appends one line (with its `\n`) to `out`; returns false when nothing was written
    /// because no field had a writable value.
    pub fn write(&self, out: &mut Vec<u8>, metric: &Metric) -> bool {
        let start = out.len();
        escape_into(out, &metric.name, Kind::Measurement);
        for (k, v) in metric.tags() {
            let (k, v) = (strip_trailing_backslash(k), strip_trailing_backslash(v));
            if k.is_empty() || v.is_empty() {
                continue;
            }
            out.push(b',');
            escape_into(out, k, Kind::Key);
            out.push(b'=');
            escape_into(out, v, Kind::Key);
        }
        let mut written = 0;
        let mut order: Vec<usize> = (0..metric.fields.len()).collect();
        if self.sort_fields {
            order.sort_by(|a, b| metric.fields[*a].0.cmp(&metric.fields[*b].0));
        }
        for i in order {
            let (key, value) = &metric.fields[i];
            if let FieldValue::Float(f) = value
                && !f.is_finite()
            {
                continue;
            }
            out.push(if written == 0 { b' ' } else { b',' });
            escape_into(out, key, Kind::Key);
            out.push(b'=');
            self.write_value(out, value);
            written += 1;
        }
        if written == 0 {
            out.truncate(start);
            return false;
        }
        if !self.omit_timestamp {
            // Writing to a Vec cannot fail.
            let _ = write!(out, " {}", metric.time);
        }
        out.push(b'\n');
        true
    }

    /// Serializes a batch into a new buffer.
    pub fn serialize(&self, metrics: &[Metric]) -> Vec<u8> {
        let mut out = Vec::with_capacity(metrics.len() * 128);
        for m in metrics {
            self.write(&mut out, m);
        }
        out
    }

    fn write_value(&self, out: &mut Vec<u8>, value: &FieldValue) {
        // Writing to a Vec cannot fail, so the results below are ignored.
        match value {
            FieldValue::Float(f) => {
                // Rust's Display for f64 is the shortest round-trip form and never uses an
                // exponent: the same digits as Go's strconv.FormatFloat(v, 'f', -1, 64).
                let _ = write!(out, "{f}");
            }
            FieldValue::Int(i) => {
                let _ = write!(out, "{i}i");
            }
            FieldValue::Uint(u) if self.uint_support => {
                let _ = write!(out, "{u}u");
            }
            FieldValue::Uint(u) => {
                let _ = write!(out, "{}i", (*u).min(i64::MAX as u64));
            }
            FieldValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            FieldValue::Str(s) => {
                out.push(b'"');
                for c in s.bytes() {
                    if c == b'"' || c == b'\\' {
                        out.push(b'\\');
                    }
                    out.push(c);
                }
                out.push(b'"');
            }
        }
    }
}

/// Telegraf's `--test` printer: `> ` prefix, fields sorted, uints with `u`.
pub fn test_format(metric: &Metric) -> String {
    let s = Serializer {
        uint_support: true,
        omit_timestamp: false,
        sort_fields: true,
    };
    let mut out = b"> ".to_vec();
    if !s.write(&mut out, metric) {
        return String::new();
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Measurement,
    Key,
}

fn strip_trailing_backslash(s: &str) -> &str {
    s.trim_end_matches('\\')
}

fn escape_into(out: &mut Vec<u8>, s: &str, kind: Kind) {
    for c in s.bytes() {
        match c {
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\x0c' => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b',' | b' ' => {
                out.push(b'\\');
                out.push(c);
            }
            b'=' if kind == Kind::Key => out.extend_from_slice(b"\\="),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(m: &Metric) -> String {
        String::from_utf8(Serializer::default().serialize(std::slice::from_ref(m))).unwrap()
    }

    #[test]
    fn floats_are_written_like_go_format_float_f() {
        let m = Metric::new("m", 1)
            .with_field("a", 100.0)
            .with_field("b", 0.000092948)
            .with_field("c", 35184372087808.0)
            .with_field("d", 1e21)
            .with_field("e", -0.5);
        assert_eq!(
            line(&m),
            "m a=100,b=0.000092948,c=35184372087808,d=1000000000000000000000,e=-0.5 1\n"
        );
    }

    #[test]
    fn uints_are_clamped_ints_unless_uint_support() {
        let m = Metric::new("m", 0)
            .with_field("u", u64::MAX)
            .with_field("i", -3i64);
        assert_eq!(line(&m), "m u=9223372036854775807i,i=-3i 0\n");
        let s = Serializer {
            uint_support: true,
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(s.serialize(&[m])).unwrap(),
            "m u=18446744073709551615u,i=-3i 0\n"
        );
    }

    #[test]
    fn non_finite_floats_are_dropped_and_an_empty_line_is_not_written() {
        let m = Metric::new("m", 0)
            .with_field("nan", f64::NAN)
            .with_field("ok", true);
        assert_eq!(line(&m), "m ok=true 0\n");
        let m = Metric::new("m", 0).with_field("inf", f64::INFINITY);
        assert_eq!(line(&m), "");
    }

    #[test]
    fn escaping_follows_telegraf() {
        let m = Metric::new("cpu load,x", 7)
            .with_tag("path", "/mnt/my disk")
            .with_tag("k=v", "a,b=c\\")
            .with_field("f x", "say \"hi\" \\o/")
            .with_field("g", false);
        assert_eq!(
            line(&m),
            "cpu\\ load\\,x,k\\=v=a\\,b\\=c,path=/mnt/my\\ disk f\\ x=\"say \\\"hi\\\" \\\\o/\",g=false 7\n"
        );
    }

    #[test]
    fn control_characters_are_written_as_escapes() {
        let m = Metric::new("a\tb", 0)
            .with_tag("t", "x\ny")
            .with_field("f", 1i64);
        assert_eq!(line(&m), "a\\tb,t=x\\ny f=1i 0\n");
    }

    #[test]
    fn test_printer_sorts_fields_and_shows_uints() {
        let m = Metric::new("m", 3)
            .with_field("z", 1u64)
            .with_field("a", 2.5);
        assert_eq!(test_format(&m), "> m a=2.5,z=1u 3\n");
    }

    #[test]
    fn omit_timestamp() {
        let s = Serializer {
            omit_timestamp: true,
            ..Default::default()
        };
        let m = Metric::new("m", 3).with_field("a", 1i64);
        assert_eq!(String::from_utf8(s.serialize(&[m])).unwrap(), "m a=1i\n");
    }
}
