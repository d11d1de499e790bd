//! Java `.properties` files, edited by key.

/// A Java `.properties` file kept as its logical lines, so that keys can be
/// set while every other line (comments, the image's keys, their escapes)
/// stays as it was. The syntax is `java.util.Properties.load`'s: `#` or `!`
/// starts a comment line; a line ending in an odd number of `\` continues;
/// the key ends at the first unescaped `=`, `:` or white space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertiesFile {
    lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    /// The physical lines of this logical line, without line breaks.
    raw: Vec<String>,
    /// `None` for comments and blank lines.
    key: Option<String>,
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{c}')
}

fn continues(line: &str) -> bool {
    line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// Java's unescaping of a key or value: `\t \n \r \f`, `\uXXXX`, and any
/// other escaped character stands for itself.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) => out.push(decoded),
                    None => out.push_str(&hex),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Escapes a value for writing (leading blanks and `\` kept literal).
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (index, c) in value.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' ' if index == 0 => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    out
}

impl Line {
    /// The logical line's text: continuations joined, their leading blanks dropped.
    fn joined(&self) -> String {
        let mut text = String::new();
        for (index, part) in self.raw.iter().enumerate() {
            let part = if index == 0 {
                part.as_str()
            } else {
                part.trim_start_matches(is_blank)
            };
            let last = index + 1 == self.raw.len();
            if !last && continues(part) {
                text.push_str(&part[..part.len() - 1]);
            } else {
                text.push_str(part);
            }
        }
        text
    }

    /// (key, value) of a key line, unescaped.
    fn entry(&self) -> Option<(String, String)> {
        self.key.as_ref()?;
        let text = self.joined();
        let text = text.trim_start_matches(is_blank);
        let mut key_end = text.len();
        let mut escaped = false;
        for (index, c) in text.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '=' || c == ':' || is_blank(c) {
                key_end = index;
                break;
            }
        }
        let key = unescape(&text[..key_end]);
        let mut rest = text[key_end..].trim_start_matches(is_blank);
        if let Some(stripped) = rest.strip_prefix(['=', ':']) {
            rest = stripped.trim_start_matches(is_blank);
        }
        Some((key, unescape(rest)))
    }
}

impl PropertiesFile {
    pub fn parse(text: &str) -> PropertiesFile {
        let mut lines = Vec::new();
        let mut physical = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));
        while let Some(first) = physical.next() {
            let content = first.trim_start_matches(is_blank);
            if content.is_empty() || content.starts_with(['#', '!']) {
                lines.push(Line {
                    raw: vec![first.to_owned()],
                    key: None,
                });
                continue;
            }
            let mut raw = vec![first.to_owned()];
            while raw.last().is_some_and(|l| continues(l)) {
                match physical.next() {
                    Some(next) => raw.push(next.to_owned()),
                    None => break,
                }
            }
            let mut line = Line {
                raw,
                key: Some(String::new()),
            };
            line.key = line.entry().map(|(key, _)| key);
            lines.push(line);
        }
        PropertiesFile { lines }
    }

    /// The value Java would read for `key` (the last occurrence wins).
    pub fn get(&self, key: &str) -> Option<String> {
        self.lines
            .iter()
            .rev()
            .filter(|l| l.key.as_deref() == Some(key))
            .find_map(|l| l.entry().map(|(_, value)| value))
    }

    /// Every key, in file order, with its raw lines.
    fn entries(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(|l| l.key.is_some())
    }

    fn set_line(&mut self, key: &str, raw: Vec<String>) {
        let line = Line {
            raw,
            key: Some(key.to_owned()),
        };
        match self
            .lines
            .iter()
            .position(|l| l.key.as_deref() == Some(key))
        {
            Some(first) => {
                self.lines[first] = line;
                let mut index = 0;
                self.lines.retain(|l| {
                    index += 1;
                    index - 1 == first || l.key.as_deref() != Some(key)
                });
            }
            None => self.lines.push(line),
        }
    }

    /// Sets `key` to `value`: in place of its first line (later duplicates
    /// go), else appended.
    pub fn set(&mut self, key: &str, value: &str) {
        self.set_line(key, vec![format!("{key} = {}", escape_value(value))]);
    }

    /// Sets `key` only when the file lacks it.
    pub fn set_default(&mut self, key: &str, value: &str) {
        if self.get(key).is_none() {
            self.set(key, value);
        }
    }

    /// Takes every key of `other` over, as `other` writes it.
    pub fn merge(&mut self, other: &PropertiesFile) {
        for line in other.entries() {
            if let Some(key) = &line.key {
                self.set_line(key, line.raw.clone());
            }
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            for part in &line.raw {
                text.push_str(part);
                text.push('\n');
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keep_the_images_lines_and_set_ours() {
        let image = "# JOC's installer\n\
                     log4j.configuration = log4j2.xml\n\
                     hibernate_configuration_file=hibernate.cfg.xml\n\
                     title  long \\\n    value\n\
                     ordering = 7\n\
                     ordering : 8\n\
                     ! other comment\n";
        let mut file = PropertiesFile::parse(image);
        assert_eq!(file.get("title").as_deref(), Some("long value"));
        assert_eq!(
            file.get("ordering").as_deref(),
            Some("8"),
            "Java's last wins"
        );
        file.set("ordering", "0");
        file.set("cluster_polling_interval", "1");
        file.set_default("log4j.configuration", "other.xml");
        let text = file.render();
        assert_eq!(
            text,
            "# JOC's installer\n\
             log4j.configuration = log4j2.xml\n\
             hibernate_configuration_file=hibernate.cfg.xml\n\
             title  long \\\n    value\n\
             ordering = 0\n\
             ! other comment\n\
             cluster_polling_interval = 1\n"
        );
        let reread = PropertiesFile::parse(&text);
        assert_eq!(reread.get("ordering").as_deref(), Some("0"));
        let mut user = PropertiesFile::parse("title = mine\nkeystore_path = /x\n");
        user.merge(&PropertiesFile::parse("a\\:b = c\n"));
        assert_eq!(user.get("a:b").as_deref(), Some("c"));
        file.merge(&user);
        assert_eq!(file.get("title").as_deref(), Some("mine"));
        assert_eq!(file.get("keystore_path").as_deref(), Some("/x"));
        assert_eq!(
            PropertiesFile::parse("k=\\u0041\\ b").get("k").as_deref(),
            Some("A b")
        );
    }
}
