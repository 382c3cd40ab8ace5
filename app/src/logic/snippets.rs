//! Copy-paste API snippets for the current form: curl, Python (the official Segmind
//! SDK with `base_url`) and JavaScript `fetch`, pointing at this deployment.

use parallax_api::{Model, ParamKind};

use super::form::FormState;

/// The three snippets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippets {
    pub curl: String,
    pub python: String,
    pub javascript: String,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn is_text(model: Model, name: &str) -> bool {
    model
        .param(name)
        .is_some_and(|p| matches!(p.kind, ParamKind::Prompt { .. } | ParamKind::Choice { .. }))
}

fn python_value(model: Model, name: &str, value: &str) -> String {
    match model.param(name).map(|p| p.kind) {
        Some(ParamKind::Boolean { .. }) => {
            if value.eq_ignore_ascii_case("true") {
                "True".into()
            } else {
                "False".into()
            }
        }
        _ if is_text(model, name) => crate::json::stringify(value),
        _ => value.to_owned(),
    }
}

fn js_value(model: Model, name: &str, value: &str) -> String {
    if is_text(model, name) {
        crate::json::stringify(value)
    } else {
        value.to_owned()
    }
}

/// Snippets for `form` against `origin` (e.g. `https://parallax.example`).
pub fn build(form: &FormState, origin: &str) -> Snippets {
    let model = form.model;
    let slug = model.slug();
    let fields = form.fields();

    let mut curl =
        format!("curl -X POST {origin}/v2/{slug} \\\n  -H \"x-api-key: $PARALLAX_KEY\" \\\n");
    for (name, value) in &fields {
        curl.push_str(&format!("  -F {}={} \\\n", name, shell_quote(value)));
    }
    curl.push_str("  -F control_image=@photo.jpg");

    let mut python = format!(
        "# pip install segmind\nimport base64, os\nfrom segmind import SegmindClient\n\nclient = SegmindClient(api_key=os.environ[\"PARALLAX_KEY\"], base_url=\"{origin}/v1\")\nresult = client.run(\n    \"{slug}\",\n    control_image=base64.b64encode(open(\"photo.jpg\", \"rb\").read()).decode(),\n"
    );
    for (name, value) in &fields {
        python.push_str(&format!(
            "    {name}={},\n",
            python_value(model, name, value)
        ));
    }
    python.push_str(")\nprint(result[\"output\"])");

    let mut javascript = String::from(
        "const form = new FormData();\nform.append(\"control_image\", fileInput.files[0]);\n",
    );
    for (name, value) in &fields {
        javascript.push_str(&format!(
            "form.append(\"{name}\", String({}));\n",
            js_value(model, name, value)
        ));
    }
    javascript.push_str(&format!(
        "const job = await (await fetch(\"{origin}/v2/{slug}\", {{\n  method: \"POST\",\n  headers: {{ \"x-api-key\": PARALLAX_KEY }},\n  body: form,\n}})).json();\n// then poll job.status_url until COMPLETED, and GET job.response_url"
    ));
    Snippets {
        curl,
        python,
        javascript,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_carry_the_form_and_point_at_this_deployment() {
        let mut f = FormState::new(Model::FluxDepthDev);
        f.set("prompt", "it's a \"barn\"".into());
        f.set("disable_safety_checker", "true".into());
        let s = build(&f, "https://px.example");
        assert!(
            s.curl
                .starts_with("curl -X POST https://px.example/v2/flux-depth-dev")
        );
        assert!(
            s.curl.contains(r#"-F prompt='it'\''s a "barn"'"#),
            "{}",
            s.curl
        );
        assert!(s.curl.contains("-F num_outputs='1'"));
        assert!(s.curl.ends_with("-F control_image=@photo.jpg"));
        assert!(s.python.contains("base_url=\"https://px.example/v1\""));
        assert!(
            s.python.contains(r#"prompt="it's a \"barn\"","#),
            "{}",
            s.python
        );
        assert!(s.python.contains("disable_safety_checker=True,"));
        assert!(s.python.contains("num_outputs=1,"));
        assert!(
            s.javascript
                .contains("fetch(\"https://px.example/v2/flux-depth-dev\"")
        );
        assert!(
            s.javascript
                .contains(r#"form.append("megapixels", String("1"));"#),
            "{}",
            s.javascript
        );
        assert!(!s.curl.contains(" seed="), "an empty seed is not sent");
    }
}
