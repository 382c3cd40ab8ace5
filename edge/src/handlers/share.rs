//! `GET /r/{id}`: a result's share page. It is the playground's `index.html` (which
//! renders the result) with Open Graph and Twitter card tags injected here, so chat
//! apps and crawlers that run no JavaScript get a full preview. Every injected value
//! is HTML-escaped. Unknown or expired ids get the page with a 404 status.
//!
//! The page never names the control image (a person's photo, private to the job's
//! owner): the preview is the first output, or the neutral [`CARD`] while the job runs
//! or after it failed.

use parallax_api::JobStatus;
use worker::{Env, Headers, Request, Response};

use crate::bindings;
use crate::config::Config;
use crate::error::EdgeResult;
use crate::objects::runner::JobRecord;
use crate::objects::runner::client::load;
use crate::storage::keys;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// The preview of a job that has no output to show: the app's icon (a static file of
/// the playground), and its size.
pub const CARD: (&str, u32, u32) = ("/icon-512.png", 512, 512);

/// The tags (and a no-script summary) for a job, with absolute URLs on `origin`.
pub fn head_tags(job: &JobRecord, origin: &str) -> (String, String) {
    // A depth preview has no prompt: it is named by what it is.
    let caption = if job.model.is_preview() {
        "A depth map (near = bright)".to_owned()
    } else {
        job.params.prompt().to_owned()
    };
    let title = if job.model.is_preview() {
        format!("{caption} — Parallax")
    } else {
        format!("“{}” — Parallax", shorten(&caption, 80))
    };
    let description = match job.status {
        JobStatus::Completed if job.model.is_preview() => format!(
            "The depth map {} estimated of a control image: what FLUX.1 Depth keeps of it.",
            job.model.title()
        ),
        JobStatus::Completed => format!(
            "Made with {}{} from a control image's depth. Open to compare, download or remix.",
            job.model.title(),
            job.asked_model
                .map(|m| format!(" (serving a {} request)", m.title()))
                .unwrap_or_default()
        ),
        JobStatus::Failed => "This job failed.".to_owned(),
        _ => "This image is still being generated.".to_owned(),
    };
    let url = format!("{origin}{}", keys::share_path(&job.id));
    let (image, width, height) = match job.outputs.first() {
        Some(o) if job.status == JobStatus::Completed => (
            format!("{origin}{}", keys::output_path(&job.id, 0, &o.ext)),
            o.width,
            o.height,
        ),
        _ => (format!("{origin}{}", CARD.0), CARD.1, CARD.2),
    };
    let e = |s: &str| escape(s);
    let mut tags = format!(
        "<title>{t}</title>\n<meta name=\"description\" content=\"{d}\">\n\
<meta property=\"og:type\" content=\"website\">\n<meta property=\"og:site_name\" content=\"Parallax\">\n\
<meta property=\"og:title\" content=\"{t}\">\n<meta property=\"og:description\" content=\"{d}\">\n\
<meta property=\"og:url\" content=\"{u}\">\n<meta property=\"og:image\" content=\"{i}\">\n\
<meta property=\"og:image:alt\" content=\"{alt}\">\n",
        t = e(&title),
        d = e(&description),
        u = e(&url),
        i = e(&image),
        alt = e(&shorten(&caption, 200)),
    );
    if width > 0 && height > 0 {
        tags.push_str(&format!(
            "<meta property=\"og:image:width\" content=\"{width}\">\n<meta property=\"og:image:height\" content=\"{height}\">\n"
        ));
    }
    tags.push_str(&format!(
        "<meta name=\"twitter:card\" content=\"summary_large_image\">\n<meta name=\"twitter:title\" content=\"{}\">\n\
<meta name=\"twitter:description\" content=\"{}\">\n<meta name=\"twitter:image\" content=\"{}\">\n",
        e(&title),
        e(&description),
        e(&image)
    ));
    let noscript = format!(
        "<noscript><main class=\"share-static\"><h1>{}</h1><img src=\"{}\" alt=\"{}\"><p>{}</p></main></noscript>",
        e(&caption),
        e(&image),
        e(&shorten(&caption, 200)),
        e(&description)
    );
    (tags, noscript)
}

/// Puts `tags` into `<head>` (replacing the default title) and `body_html` at the
/// start of `<body>`.
pub fn inject(index: &str, tags: &str, body_html: &str) -> String {
    let mut html = match (index.find("<title>"), index.find("</title>")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &index[..a], &index[b + "</title>".len()..]),
        _ => index.to_owned(),
    };
    if let Some(at) = html.find("</head>") {
        html.insert_str(at, tags);
    }
    if let Some(at) = html.find("<body>") {
        html.insert_str(at + "<body>".len(), body_html);
    }
    html
}

pub async fn get_share_page(req: &Request, env: &Env, id: &str) -> EdgeResult<Response> {
    let cfg = Config::from_env(env);
    let origin = crate::http::origin(req, cfg.public_base_url.as_deref());
    let mut index = env
        .assets(bindings::ASSETS)?
        .fetch(format!("{origin}/"), None)
        .await?;
    let index = index.text().await?;
    let (html, status) = match load(env, id).await {
        Ok(job) => {
            let (tags, body) = head_tags(&job, &origin);
            (inject(&index, &tags, &body), 200)
        }
        Err(_) => (
            inject(
                &index,
                "<title>Not found — Parallax</title>\n<meta name=\"robots\" content=\"noindex\">\n",
                "<noscript><p>This result does not exist or has expired.</p></noscript>",
            ),
            404,
        ),
    };
    let headers = Headers::new();
    headers.set("content-type", "text/html; charset=utf-8")?;
    headers.set("cache-control", "public, max-age=60")?;
    // The policy hashes the build's own inline script (the static `index.html`), not
    // the page after injection: whatever reached the injected tags could never add a
    // script the policy allows.
    crate::security::set_html_headers(&headers, &index)?;
    Ok(Response::builder()
        .with_status(status)
        .with_headers(headers)
        .fixed(html.into_bytes()))
}

#[cfg(test)]
mod tests {
    use parallax_api::{Model, Params, RequestId};

    use super::*;
    use crate::input::image::{ImageFormat, ImageInfo};
    use crate::objects::runner::{Ownership, StoredOutput};

    fn job(prompt: &str) -> JobRecord {
        let mut params = Params::default();
        params.0.insert("prompt".into(), prompt.into());
        let mut j = JobRecord::new(
            RequestId::parse("2c7f59ea-13f1-402c-9353-915a2b5a2124").unwrap(),
            Model::FluxDepthPro,
            params,
            ImageInfo {
                format: ImageFormat::Jpeg,
                width: 640,
                height: 427,
            },
            Ownership {
                owner: "anon:x".into(),
                charged: 5,
                retention_secs: 60,
            },
            0,
            900,
            vec!["segmind".into()],
        );
        j.complete(
            vec![StoredOutput {
                ext: "jpg".into(),
                content_type: "image/jpeg".into(),
                bytes: 9,
                width: 1232,
                height: 816,
            }],
            1000,
        );
        j
    }

    #[test]
    fn tags_carry_absolute_non_expiring_urls_and_dimensions() {
        let (tags, _) = head_tags(&job("a red barn"), "https://px.example");
        assert!(tags.contains(r#"<meta property="og:image" content="https://px.example/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/0.jpg">"#), "{tags}");
        assert!(tags.contains(r#"<meta property="og:image:width" content="1232">"#));
        assert!(tags.contains(r#"<meta property="og:title" content="“a red barn” — Parallax">"#));
        assert!(tags.contains(r#"<meta name="twitter:card" content="summary_large_image">"#));
        assert!(tags.contains(r#"<meta property="og:url" content="https://px.example/r/2c7f59ea-13f1-402c-9353-915a2b5a2124">"#));
    }

    #[test]
    fn a_job_without_output_previews_the_neutral_card_never_its_photo() {
        let mut running = job("a photo");
        running.status = JobStatus::Processing;
        running.outputs.clear();
        let mut failed = running.clone();
        failed.status = JobStatus::Failed;
        for j in [running, failed] {
            let (tags, body) = head_tags(&j, "https://px.example");
            assert!(
                tags.contains(
                    r#"<meta property="og:image" content="https://px.example/icon-512.png">"#
                ),
                "{tags}"
            );
            assert!(tags.contains(r#"<meta property="og:image:width" content="512">"#));
            for html in [&tags, &body] {
                assert!(!html.contains("/control"), "{html}");
            }
        }
    }

    #[test]
    fn a_hostile_prompt_is_escaped_everywhere() {
        let (tags, body) = head_tags(&job(r#""><script>alert(1)</script>"#), "https://px.example");
        for html in [&tags, &body] {
            assert!(!html.contains("<script>"), "{html}");
            assert!(
                html.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{html}"
            );
        }
    }

    #[test]
    fn injection_replaces_the_title_and_keeps_the_page() {
        let index = "<html><head><meta charset=\"utf-8\"><title>Parallax</title><link rel=\"x\"></head><body><script src=\"a.js\"></script></body></html>";
        let html = inject(index, "<title>T</title>", "<noscript>N</noscript>");
        assert_eq!(
            html,
            "<html><head><meta charset=\"utf-8\"><link rel=\"x\"><title>T</title></head><body><noscript>N</noscript><script src=\"a.js\"></script></body></html>"
        );
    }
}
