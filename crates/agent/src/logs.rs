//! Container logs as the kubelet serves them: CRI log files (`TIMESTAMP STREAM TAG MESSAGE`,
//! with `P` for a partial line and `F` for its end) turned back into the container's output,
//! with upstream's options (tailLines, timestamps, sinceSeconds/sinceTime, limitBytes,
//! previous, follow).

use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    #[serde(default, deserialize_with = "flag")]
    pub follow: bool,
    #[serde(default, deserialize_with = "flag")]
    pub previous: bool,
    #[serde(default, deserialize_with = "flag")]
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<String>,
    pub limit_bytes: Option<i64>,
}

/// Query flags arrive as `true`, `1` or bare.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s: String = serde::Deserialize::deserialize(d)?;
    Ok(matches!(s.as_str(), "" | "true" | "1" | "True"))
}

/// One line of a CRI log file.
#[derive(Debug, PartialEq)]
pub struct Entry<'a> {
    pub time: &'a str,
    pub partial: bool,
    pub message: &'a str,
}

pub fn parse(line: &str) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let message = parts.next().unwrap_or("");
    Some(Entry { time, partial: tag.split(':').next() == Some("P"), message })
}

/// The newest (or, with `previous`, the one before) log file of a container, in
/// `DIR/NAMESPACE_POD_UID/CONTAINER/ATTEMPT.log`. With several pods of one name over time,
/// the newest directory is the pod's.
pub fn find(root: &Path, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<PathBuf> {
    let prefix = format!("{namespace}_{pod}_");
    let pod_dir = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())?
        .path();
    let mut attempts: Vec<u32> = std::fs::read_dir(pod_dir.join(container))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".log")?.parse().ok())
        .collect();
    attempts.sort_unstable();
    let pick = if previous { attempts.iter().rev().nth(1) } else { attempts.last() }?;
    Some(pod_dir.join(container).join(format!("{pick}.log")))
}

/// Renders log file content: whole lines only (a partial line waits for its end), after the
/// `since` cut, the last `tail_lines`, then at most `limit_bytes`. Returns the output and how
/// many bytes of `text` were consumed (a trailing unfinished line is left for later).
pub fn render(text: &str, options: &Options, since: Option<Timestamp>) -> (String, usize) {
    let mut lines: Vec<String> = Vec::new();
    let mut pending = String::new();
    let mut first_time: Option<&str> = None;
    let mut consumed = 0;
    for raw in text.split_inclusive('\n') {
        if !raw.ends_with('\n') {
            break;
        }
        consumed += raw.len();
        let Some(entry) = parse(raw.trim_end_matches('\n')) else { continue };
        first_time.get_or_insert(entry.time);
        pending.push_str(entry.message);
        if entry.partial {
            continue;
        }
        let time = first_time.take().unwrap_or(entry.time);
        let message = std::mem::take(&mut pending);
        if let Some(since) = since
            && time.parse::<Timestamp>().is_ok_and(|t| t < since)
        {
            continue;
        }
        lines.push(if options.timestamps { format!("{time} {message}\n") } else { format!("{message}\n") });
    }
    if let Some(tail) = options.tail_lines.filter(|t| *t >= 0) {
        let skip = lines.len().saturating_sub(tail as usize);
        lines.drain(..skip);
    }
    let mut out = lines.concat();
    if let Some(limit) = options.limit_bytes.filter(|l| *l >= 0) {
        let mut cut = (limit as usize).min(out.len());
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    (out, consumed)
}

/// The instant before which lines are dropped, from sinceSeconds or sinceTime.
pub fn since(options: &Options, now: Timestamp) -> Option<Timestamp> {
    if let Some(seconds) = options.since_seconds {
        return now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(seconds)).ok();
    }
    options.since_time.as_deref().and_then(|t| t.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:01.000000000Z stdout F one\n\
2026-01-01T00:00:02.000000000Z stderr P tw\n\
2026-01-01T00:00:02.500000000Z stderr F o\n\
2026-01-01T00:00:03.000000000Z stdout F three\n\
2026-01-01T00:00:04.000000000Z stdout F unfinish";

    #[test]
    fn joins_partial_lines_and_keeps_unfinished_ones_for_later() {
        let (out, consumed) = render(LOG, &Options::default(), None);
        assert_eq!(out, "one\ntwo\nthree\n");
        assert_eq!(&LOG[consumed..], "2026-01-01T00:00:04.000000000Z stdout F unfinish");
    }

    #[test]
    fn tail_timestamps_since_and_limit() {
        let tail = Options { tail_lines: Some(2), ..Default::default() };
        assert_eq!(render(LOG, &tail, None).0, "two\nthree\n");
        let none = Options { tail_lines: Some(0), ..Default::default() };
        assert_eq!(render(LOG, &none, None).0, "");
        let stamped = Options { timestamps: true, tail_lines: Some(1), ..Default::default() };
        assert_eq!(render(LOG, &stamped, None).0, "2026-01-01T00:00:03.000000000Z three\n");
        let since = "2026-01-01T00:00:02Z".parse().unwrap();
        assert_eq!(render(LOG, &Options::default(), Some(since)).0, "two\nthree\n");
        let limited = Options { limit_bytes: Some(6), ..Default::default() };
        assert_eq!(render(LOG, &limited, None).0, "one\ntw");
    }

    #[test]
    fn finds_the_newest_or_previous_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("ns_web_u1/app");
        std::fs::create_dir_all(&c).unwrap();
        for n in [0, 1, 2] {
            std::fs::write(c.join(format!("{n}.log")), "").unwrap();
        }
        assert_eq!(find(dir.path(), "ns", "web", "app", false), Some(c.join("2.log")));
        assert_eq!(find(dir.path(), "ns", "web", "app", true), Some(c.join("1.log")));
        assert_eq!(find(dir.path(), "ns", "web", "other", false), None);
        assert_eq!(find(dir.path(), "ns", "we", "app", false), None);
    }

    #[test]
    fn query_flags_parse_like_upstream() {
        let o: Options = serde_json::from_value(serde_json::json!({"follow": "true", "tailLines": 5})).unwrap();
        assert!(o.follow && !o.previous);
        assert_eq!(o.tail_lines, Some(5));
    }
}
