//! Repository readmes as HTML, for the console. A readme is written by tenants and shown to
//! everyone who may read the repository, so the rendering is the security boundary: markdown
//! goes through pulldown-cmark, raw HTML in the source comes out as escaped text (never passed
//! through), and links and images keep only http(s), mailto and relative URLs. Headings move
//! down two levels (`#` becomes `<h3>`), below the page's own title and sections.

use pulldown_cmark::{CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// The readme as HTML safe to place in a page.
pub fn to_safe_html(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Heading {
            level,
            id,
            classes,
            attrs,
        }) => Event::Start(Tag::Heading {
            level: demoted(level),
            id,
            classes,
            attrs,
        }),
        Event::End(TagEnd::Heading(level)) => Event::End(TagEnd::Heading(demoted(level))),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        other => other,
    });
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

fn demoted(level: HeadingLevel) -> HeadingLevel {
    match level {
        HeadingLevel::H1 => HeadingLevel::H3,
        HeadingLevel::H2 => HeadingLevel::H4,
        HeadingLevel::H3 => HeadingLevel::H5,
        _ => HeadingLevel::H6,
    }
}

/// `url` when its scheme is http, https or mailto, or it has none (relative); else `#`.
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let trimmed = url.trim_start();
    let scheme_end = trimmed.find([':', '/', '?', '#']);
    let allowed = match scheme_end {
        Some(at) if trimmed[at..].starts_with(':') => {
            let scheme = trimmed[..at].to_ascii_lowercase();
            matches!(scheme.as_str(), "http" | "https" | "mailto")
        }
        _ => !trimmed.chars().any(|c| c.is_control()),
    };
    if allowed {
        url
    } else {
        CowStr::Borrowed("#")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_html_is_shown_as_text() {
        let html = to_safe_html("# Title\n\n<script>alert(1)</script>\n\nhi <img src=x onerror=alert(2)>");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("<h3>Title</h3>"), "{html}");
    }

    #[test]
    fn only_safe_link_schemes_survive() {
        let html = to_safe_html(
            "[a](javascript:alert(1)) [b](https://example.com) [c](docs/x.md) [d](JaVaScRiPt:x) [e](data:text/html,x)",
        );
        assert!(!html.to_ascii_lowercase().contains("javascript:"), "{html}");
        assert!(!html.contains("data:"), "{html}");
        assert!(html.contains(r#"href="https://example.com""#), "{html}");
        assert!(html.contains(r#"href="docs/x.md""#), "{html}");
        assert_eq!(html.matches(r##"href="#""##).count(), 3, "{html}");
    }

    #[test]
    fn markdown_structure_renders() {
        let html = to_safe_html("| a | b |\n|---|---|\n| 1 | 2 |\n\n- [x] done\n\n`code`");
        assert!(html.contains("<table>") && html.contains("<code>code</code>"), "{html}");
    }
}
