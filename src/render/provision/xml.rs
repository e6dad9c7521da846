//! The small XML writer the Cisco, Polycom and Snom files are built with: escaped text and
//! attributes, two-space indentation, so every file is well-formed by construction.

use std::fmt::Write;

/// Text safe inside an element or a double-quoted attribute.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An XML document under construction.
pub(super) struct Xml {
    out: String,
    open: Vec<&'static str>,
}

impl Xml {
    /// A document: the declaration, then `comment` (a comment may not hold `--`).
    pub fn new(comment: &str) -> Self {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(out, "<!-- {} -->", comment.replace("--", "- -"));
        Xml { out, open: Vec::new() }
    }

    fn indent(&mut self) {
        for _ in 0..self.open.len() {
            self.out.push_str("  ");
        }
    }

    fn start_tag(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(tag);
        for (name, value) in attrs {
            let _ = write!(self.out, " {name}=\"{}\"", escape(value));
        }
    }

    /// `<tag attrs>` on its own line; what follows goes inside until [`Xml::close`].
    pub fn open(&mut self, tag: &'static str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start_tag(tag, attrs);
        self.out.push_str(">\n");
        self.open.push(tag);
        self
    }

    /// Closes the innermost open element.
    pub fn close(&mut self) -> &mut Self {
        let tag = self.open.pop().expect("an element to close");
        self.indent();
        let _ = writeln!(self.out, "</{tag}>");
        self
    }

    /// `<tag>text</tag>`.
    pub fn leaf(&mut self, tag: &str, text: impl std::fmt::Display) -> &mut Self {
        self.leaf_with(tag, &[], text)
    }

    /// `<tag attrs>text</tag>`.
    pub fn leaf_with(
        &mut self,
        tag: &str,
        attrs: &[(&str, &str)],
        text: impl std::fmt::Display,
    ) -> &mut Self {
        self.start_tag(tag, attrs);
        let _ = writeln!(self.out, ">{}</{tag}>", escape(&text.to_string()));
        self
    }

    /// `<tag` then one `name="value"` per line, then `/>`: Polycom's parameter files.
    pub fn attribute_element(&mut self, tag: &str, attrs: &[(String, String)]) -> &mut Self {
        self.indent();
        let _ = writeln!(self.out, "<{tag}");
        for (name, value) in attrs {
            let _ = writeln!(self.out, "  {name}=\"{}\"", escape(value));
        }
        self.out.push_str("/>\n");
        self
    }

    /// The document; every element must be closed.
    pub fn finish(self) -> String {
        assert!(self.open.is_empty(), "unclosed elements: {:?}", self.open);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped_and_nesting_indented() {
        let mut x = Xml::new("a -- b");
        x.open("a", &[("k", "\"<&>'")]).leaf("b", "x<y & z").close();
        assert_eq!(
            x.finish(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- a - - b -->\n<a k=\"&quot;&lt;&amp;&gt;&apos;\">\n  <b>x&lt;y &amp; z</b>\n</a>\n"
        );
    }
}
