//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the `api` catalog.

use worker::{Env, Request, Response};

use crate::config::Config;
use crate::http;

pub fn get_openapi(req: &Request, env: &Env) -> Response {
    let origin = http::origin(req, Config::from_env(env).public_base_url.as_deref());
    let mut resp = http::json(&parallax_api::openapi::document(&origin), 200);
    let _ = resp
        .headers_mut()
        .set("cache-control", "public, max-age=300");
    resp
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use parallax_api::Model;

    /// `(METHOD, /path/{})` for every route of `router.rs`'s table, read from its
    /// source: each `[segments] => { allow(method, &[methods], …)` arm. Providers'
    /// callbacks (`/hooks/…`) and the test stacks' `/__dev/…` are not public API; the
    /// catch-all arms (`..`) are no route.
    fn router_routes() -> BTreeSet<(String, String)> {
        let source = include_str!("../router.rs");
        let lines: Vec<&str> = source.lines().map(str::trim).collect();
        let mut routes = BTreeSet::new();
        for (n, line) in lines.iter().enumerate() {
            let Some((pattern, _)) = line.split_once("=>") else {
                continue;
            };
            if !pattern.starts_with('[') || pattern.contains("..") {
                continue;
            }
            let pattern = pattern.split(" if ").next().unwrap_or_default();
            let methods: Vec<String> = lines[n + 1]
                .split_once("&[")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(list, _)| {
                    list.split(',')
                        .map(|m| m.trim().trim_matches('"').to_owned())
                        .collect()
                })
                .unwrap_or_else(|| panic!("no allow(…) after {line}"));
            for alternative in pattern.split('|') {
                let segments: Vec<&str> = alternative
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .map(str::trim)
                    .filter(|s| *s != "\"\"")
                    .collect();
                if matches!(segments.first(), Some(&"\"hooks\"" | &"\"__dev\"")) {
                    continue;
                }
                let mut paths = vec![String::new()];
                for segment in segments {
                    let options: Vec<String> = match segment {
                        "model" => Model::ALL.iter().map(|m| m.slug().to_owned()).collect(),
                        s if s.starts_with('"') => vec![s.trim_matches('"').to_owned()],
                        _ => vec!["{}".to_owned()],
                    };
                    paths = paths
                        .iter()
                        .flat_map(|p| options.iter().map(move |o| format!("{p}/{o}")))
                        .collect();
                }
                for path in paths {
                    for method in &methods {
                        routes.insert((method.clone(), path.clone()));
                    }
                }
            }
        }
        routes
    }

    /// `(METHOD, /path/{})` for every operation of the OpenAPI document.
    fn documented() -> BTreeSet<(String, String)> {
        let doc = parallax_api::openapi::document("");
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let mut normalised = String::new();
            let mut in_param = false;
            for c in path.chars() {
                match c {
                    '{' => in_param = true,
                    '}' => {
                        in_param = false;
                        normalised.push_str("{}");
                    }
                    _ if !in_param => normalised.push(c),
                    _ => {}
                }
            }
            for method in item.as_object().unwrap().keys() {
                ops.insert((method.to_ascii_uppercase(), normalised.clone()));
            }
        }
        ops
    }

    #[test]
    fn every_public_route_of_the_router_is_in_the_openapi_document() {
        let routes = router_routes();
        assert!(routes.len() >= 19, "the table was read: {routes:?}");
        assert!(routes.contains(&("POST".into(), "/v2/requests/{}/cancel".into())));
        let documented = documented();
        let missing: Vec<_> = routes.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes missing from /openapi.json: {missing:?}"
        );
        let stale: Vec<_> = documented.difference(&routes).collect();
        assert!(stale.is_empty(), "documented but not routed: {stale:?}");
    }
}
