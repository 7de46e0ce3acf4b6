//! What is wrong with a topology file: one `Problem` per finding, each printed as
//! `FILE:LINE: resource "NAME": message`, and `Report`, which turns byte offsets into
//! 1-based line numbers while the parser and validator collect them.

use std::fmt;
use std::ops::Range;

/// The kinds of resources a topology file declares (the TOML table names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    PhysicalNetworks,
    Underlay,
    Dns,
    Network,
    Subnet,
    Port,
    Router,
    FloatingIp,
}

impl ResourceKind {
    /// The table name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::PhysicalNetworks => "physical_networks",
            ResourceKind::Underlay => "underlay",
            ResourceKind::Dns => "dns",
            ResourceKind::Network => "network",
            ResourceKind::Subnet => "subnet",
            ResourceKind::Port => "port",
            ResourceKind::Router => "router",
            ResourceKind::FloatingIp => "floating_ip",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing wrong with a topology file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file as the caller named it.
    pub file: String,
    /// 1-based line of the offending field; `None` when the whole file is at fault
    /// (unreadable, not UTF-8).
    pub line: Option<usize>,
    /// The resource the field belongs to; `None` for document-level problems (TOML
    /// syntax, unknown top-level tables).
    pub resource_kind: Option<ResourceKind>,
    /// The resource's `name` (a floating IP's `ip`); `None` if it has none or it could
    /// not be read.
    pub resource_name: Option<String>,
    /// What is wrong, starting with the field's name, on one line.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
        }
        match (&self.resource_kind, &self.resource_name) {
            (Some(kind), Some(name)) => write!(f, " {kind} {name:?}:")?,
            (Some(kind), None) => write!(f, " {kind}:")?,
            (None, _) => {}
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found in a topology file, in line order; displays one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct Errors(pub Vec<Problem>);

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Errors {
    pub fn problems(&self) -> &[Problem] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a Errors {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A resource as problems name it.
#[derive(Clone, Debug)]
pub(crate) struct Res {
    pub kind: ResourceKind,
    pub name: Option<String>,
}

impl Res {
    pub fn new(kind: ResourceKind, name: impl Into<String>) -> Self {
        Res {
            kind,
            name: Some(name.into()),
        }
    }

    pub fn unnamed(kind: ResourceKind) -> Self {
        Res { kind, name: None }
    }
}

/// Collects problems against one file's text.
pub(crate) struct Report {
    file: String,
    line_starts: Vec<usize>,
    problems: Vec<Problem>,
}

impl Report {
    pub fn new(file: &str, text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Report {
            file: file.to_owned(),
            line_starts,
            problems: Vec::new(),
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// Records a problem at `span` (a byte range of the file).
    pub fn at(&mut self, span: &Range<usize>, res: Option<&Res>, message: impl Into<String>) {
        let line = Some(self.line_of(span.start));
        self.push(line, res, message.into());
    }

    fn push(&mut self, line: Option<usize>, res: Option<&Res>, message: String) {
        // Messages from TOML and serde may span lines; a problem is one line.
        let message = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            resource_kind: res.map(|r| r.kind),
            resource_name: res.and_then(|r| r.name.clone()),
            message,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems sorted by line (stable, so one line's problems keep their order).
    pub fn into_errors(mut self) -> Errors {
        self.problems.sort_by_key(|p| p.line);
        self.problems.dedup();
        Errors(self.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        let r = Report::new("t.toml", "a\nbb\n\nc");
        assert_eq!(r.line_of(0), 1);
        assert_eq!(r.line_of(1), 1);
        assert_eq!(r.line_of(2), 2);
        assert_eq!(r.line_of(5), 3);
        assert_eq!(r.line_of(6), 4);
    }

    #[test]
    fn display_format() {
        let p = Problem {
            file: "topology.toml".into(),
            line: Some(41),
            resource_kind: Some(ResourceKind::Subnet),
            resource_name: Some("demo-subnet".into()),
            message: "gateway_ip 10.0.0.1 is outside cidr 192.168.1.0/24".into(),
        };
        assert_eq!(
            p.to_string(),
            "topology.toml:41: subnet \"demo-subnet\": gateway_ip 10.0.0.1 is outside cidr 192.168.1.0/24"
        );
        let e = Errors(vec![
            p.clone(),
            Problem {
                line: None,
                resource_kind: None,
                message: "x".into(),
                ..p
            },
        ]);
        assert_eq!(e.to_string().lines().count(), 2);
        assert!(e.to_string().ends_with("\ntopology.toml: x"));
    }
}
