//! The last hint of every part, its code, read from the reference solution.
//!
//! An exercise and its solution are the same file outside the bodies of the functions the
//! learner writes. A part of `tasks.toml` names its function (`todo = "Type::method"`, or a free
//! function's name), so the code of that part is that function's body in `solutions/`: one home
//! for every answer, never a copy that can drift from what passes the checks. [`assemble`] puts
//! every part's code into the stub, which is how a test proves that a learner who pastes each
//! last hint ends with the reference, word for word.

use std::ops::Range;

/// A function of a source file: where it is, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Function {
    /// The type of the `impl` block it is in, if any (`MiniGPT` in `impl Module for MiniGPT`).
    owner: Option<String>,
    /// Whether that block implements a trait (`impl Module for MiniGPT`).
    of_trait: bool,
    name: String,
    /// The body, braces included, as a byte range of the file.
    body: Range<usize>,
}

/// The code of the part whose `todo` is `todo` (see [`crate::tasks::Part::todo`]): the body of
/// its function in `solution`, without the braces and without the indentation it has there.
pub fn part_code(solution: &str, todo: &str) -> Result<String, String> {
    let f = find(solution, todo)?;
    Ok(dedent(&solution[f.body.start + 1..f.body.end - 1]))
}

/// `stub` with the body of each of `todos`' functions replaced by the same function's body in
/// `solution`: the file a learner has after pasting the last hint of every part.
pub fn assemble(stub: &str, solution: &str, todos: &[&str]) -> Result<String, String> {
    let mut replacements = todos
        .iter()
        .map(|todo| Ok((find(stub, todo)?.body, find(solution, todo)?.body)))
        .collect::<Result<Vec<_>, String>>()?;
    replacements.sort_by_key(|(at, _)| at.start);
    let mut out = String::with_capacity(solution.len());
    let mut from = 0;
    for (at, with) in replacements {
        out.push_str(&stub[from..at.start]);
        out.push_str(&solution[with]);
        from = at.end;
    }
    out.push_str(&stub[from..]);
    Ok(out)
}

/// The one function `todo` names: `Type::method` is a method of an `impl` block for `Type`, a
/// bare name a free function; anything after the name (` (einsum)`) tells parts apart only.
/// Where a type has a method and a trait's method of the same name, it is its own method.
fn find(src: &str, todo: &str) -> Result<Function, String> {
    let name = todo.split(" (").next().unwrap_or(todo);
    let (owner, name) = match name.rsplit_once("::") {
        Some((owner, name)) => (Some(owner), name),
        None => (None, name),
    };
    let mut found: Vec<Function> = functions(src)
        .into_iter()
        .filter(|f| f.name == name && f.owner.as_deref() == owner)
        .collect();
    if found.iter().any(|f| !f.of_trait) {
        found.retain(|f| !f.of_trait);
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("no function {todo:?} in the file")),
        _ => Err(format!("{} functions {todo:?} in the file", found.len())),
    }
}

/// Every function with a body that is not inside another function's body, in file order.
fn functions(src: &str) -> Vec<Function> {
    let code = Code::new(src);
    let mut found = Vec::new();
    // The `impl` blocks seen so far that are still open: (owner, of a trait, end of body).
    let mut impls: Vec<(String, bool, usize)> = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if let Some(skip) = code.skip_literal_or_comment(i) {
            i = skip;
            continue;
        }
        impls.retain(|&(_, _, end)| i < end);
        if code.keyword_at(i, "impl") {
            if let Some(open) = code.next_brace(i) {
                let header = &src[i + 4..open];
                let of_trait = header.contains(" for ");
                impls.push((impl_owner(header), of_trait, code.matching_brace(open)));
                i = open + 1;
                continue;
            }
        } else if code.keyword_at(i, "fn") {
            let name: String = src[i + 2..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if let Some(open) = code.next_brace(i) {
                let end = code.matching_brace(open);
                let owner = impls.last();
                found.push(Function {
                    owner: owner.map(|(o, _, _)| o.clone()),
                    of_trait: owner.is_some_and(|&(_, t, _)| t),
                    name,
                    body: open..end,
                });
                i = end;
                continue;
            }
        }
        i += src[i..].chars().next().map_or(1, char::len_utf8);
    }
    found
}

/// The type an `impl` header is for: `<T> Trait<T> for Type<T>` → `Type`.
fn impl_owner(header: &str) -> String {
    let header = header.trim_start();
    // Generic parameters right after `impl`.
    let header = match header.strip_prefix('<') {
        Some(rest) => {
            let mut depth = 1;
            let close = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '<' => 1,
                        '>' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(rest.len(), |(at, _)| at + 1);
            &rest[close..]
        }
        None => header,
    };
    let ty = header.rsplit(" for ").next().unwrap_or(header).trim();
    let ty = ty.split(['<', ' ', '\n']).next().unwrap_or(ty);
    ty.rsplit("::").next().unwrap_or(ty).to_string()
}

/// A source file read as Rust code: where its strings, characters and comments are.
struct Code<'a> {
    src: &'a str,
}

impl<'a> Code<'a> {
    fn new(src: &'a str) -> Self {
        Self { src }
    }

    fn len(&self) -> usize {
        self.src.len()
    }

    /// If a comment, string or character literal starts at `i`, the index just past it.
    fn skip_literal_or_comment(&self, i: usize) -> Option<usize> {
        let rest = &self.src[i..];
        let prev = self.src[..i].chars().next_back();
        let starts_word = !prev.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if rest.starts_with("//") {
            return Some(rest.find('\n').map_or(self.len(), |n| i + n));
        }
        if rest.starts_with("/*") {
            let mut depth = 0;
            let mut j = i;
            while j < self.len() {
                if self.src[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if self.src[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        return Some(j);
                    }
                } else {
                    j += 1;
                }
            }
            return Some(self.len());
        }
        if starts_word {
            // Raw strings: r"…", r#"…"#, br"…".
            let raw = rest.strip_prefix("br").or_else(|| rest.strip_prefix('r'));
            if let Some(after_r) = raw {
                let hashes = after_r.chars().take_while(|&c| c == '#').count();
                if after_r[hashes..].starts_with('"') {
                    let close = format!("\"{}", "#".repeat(hashes));
                    let open_len = rest.len() - after_r.len() + hashes + 1;
                    let body = &rest[open_len..];
                    return Some(
                        body.find(&close)
                            .map_or(self.len(), |n| i + open_len + n + close.len()),
                    );
                }
            }
        }
        if rest.starts_with('"') || (starts_word && rest.starts_with("b\"")) {
            let open = rest.find('"').unwrap_or(0) + 1;
            let mut chars = rest[open..].char_indices();
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => return Some(i + open + at + 1),
                    _ => {}
                }
            }
            return Some(self.len());
        }
        if let Some(after) = rest.strip_prefix('\'') {
            // A character literal ('x', '\n', '\u{7f}'), not a lifetime ('a).
            let mut chars = after.char_indices();
            return match chars.next() {
                Some((_, '\\')) => rest[2..].find('\'').map(|n| i + 2 + n + 1),
                Some((_, _)) => match chars.next() {
                    Some((at, '\'')) => Some(i + 1 + at + 1),
                    _ => None,
                },
                None => None,
            };
        }
        None
    }

    /// Whether the word `word` starts at `i`, standing alone.
    fn keyword_at(&self, i: usize, word: &str) -> bool {
        let is_word = |c: char| c.is_alphanumeric() || c == '_';
        self.src[i..].starts_with(word)
            && !self.src[..i].chars().next_back().is_some_and(is_word)
            && !self.src[i + word.len()..]
                .chars()
                .next()
                .is_some_and(is_word)
    }

    /// The `{` that opens the body of the item starting at `i`; none if a `;` comes first (a
    /// declaration without a body).
    fn next_brace(&self, mut i: usize) -> Option<usize> {
        while i < self.len() {
            if let Some(skip) = self.skip_literal_or_comment(i) {
                i = skip;
                continue;
            }
            match self.src.as_bytes()[i] {
                b'{' => return Some(i),
                b';' => return None,
                _ => i += 1,
            }
        }
        None
    }

    /// The index just past the `}` that closes the `{` at `open`.
    fn matching_brace(&self, open: usize) -> usize {
        let mut depth = 0;
        let mut i = open;
        while i < self.len() {
            if let Some(skip) = self.skip_literal_or_comment(i) {
                i = skip;
                continue;
            }
            match self.src.as_bytes()[i] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        self.len()
    }
}

/// `text` without its leading and trailing blank lines, and without the indentation all its
/// lines share.
fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|l| !l.trim().is_empty());
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    let (Some(first), Some(last)) = (first, last) else {
        return String::new();
    };
    let lines = &lines[first..=last];
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the stub and the solution share outside the parts' bodies: a type, and an impl
    /// without a part.
    macro_rules! counter {
        () => {
            r#"
pub struct Counter<'a> {
    name: &'a str,
}

impl<'a> std::fmt::Display for Counter<'a> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)
    }
}
"#
        };
    }

    const STUB: &str = concat!(
        r#"
/// Doubles. A `{` in a comment, and "}" in a string, do not count.
pub fn double(x: f64) -> f64 {
    // TODO: x times two.
    todo!("double: x times two")
}
"#,
        counter!(),
        r#"
impl Counter<'_> {
    pub fn next(&self, n: u32) -> u32 {
        todo!("Counter::next: n + 1")
    }
}
"#
    );

    const SOLUTION: &str = concat!(
        r#"
/// Doubles. A `{` in a comment, and "}" in a string, do not count.
pub fn double(x: f64) -> f64 {
    // Why: one multiplication.
    let brace = '{';
    let _ = (brace, r"}}");
    x * 2.0
}
"#,
        counter!(),
        r#"
impl Counter<'_> {
    pub fn next(&self, n: u32) -> u32 {
        fn inner(n: u32) -> u32 {
            n + 1
        }
        inner(n)
    }
}
"#
    );

    #[test]
    fn functions_are_found_with_their_owner_past_braces_in_literals_and_nested_functions() {
        let names: Vec<(Option<String>, String)> = functions(SOLUTION)
            .into_iter()
            .map(|f| (f.owner, f.name))
            .collect();
        assert_eq!(
            names,
            [
                (None, "double".to_string()),
                (Some("Counter".to_string()), "fmt".to_string()),
                (Some("Counter".to_string()), "next".to_string()),
            ]
        );
    }

    #[test]
    fn a_parts_code_is_its_functions_body_in_the_solution() {
        assert_eq!(
            part_code(SOLUTION, "Counter::next").unwrap(),
            "fn inner(n: u32) -> u32 {\n    n + 1\n}\ninner(n)"
        );
        assert!(
            part_code(SOLUTION, "double (by hand)")
                .unwrap()
                .ends_with("x * 2.0")
        );
        assert!(part_code(SOLUTION, "Counter::missing").is_err());
    }

    #[test]
    fn the_stub_with_every_parts_code_is_the_solution() {
        assert_eq!(
            assemble(STUB, SOLUTION, &["double", "Counter::next"]).unwrap(),
            SOLUTION
        );
        assert_ne!(assemble(STUB, SOLUTION, &["double"]).unwrap(), SOLUTION);
    }
}
