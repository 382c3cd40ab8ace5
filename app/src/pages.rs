//! Pages of the app, chosen by the URL path: `/` (playground), `/history`, `/r/{id}`.

pub mod history;
pub mod playground;
pub mod share;

/// The page a path shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Playground,
    History,
    Share(String),
}

impl Route {
    pub fn parse(path: &str) -> Self {
        let path = path.trim_end_matches('/');
        if path == "/history" {
            Self::History
        } else if let Some(id) = path
            .strip_prefix("/r/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
        {
            Self::Share(id.to_owned())
        } else {
            Self::Playground
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_pages() {
        assert_eq!(Route::parse("/"), Route::Playground);
        assert_eq!(Route::parse("/history/"), Route::History);
        assert_eq!(Route::parse("/r/abc"), Route::Share("abc".into()));
        assert_eq!(Route::parse("/r/"), Route::Playground);
        assert_eq!(Route::parse("/anything"), Route::Playground);
    }
}
