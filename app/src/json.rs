//! JSON text to and from Rust values. In the browser the text is parsed and written
//! by the browser's own `JSON.parse`/`JSON.stringify` and the values cross with
//! `serde-wasm-bindgen`: serde_json's parser and writer are then not in the wasm
//! (4.8 KB gzip net of the glue it adds, docs/performance.md). Natively (the logic's tests) it is serde_json.
//!
//! Numbers follow JavaScript's: a whole number reads as an integer (`7.0` as `7`),
//! integers beyond 2^53 are refused.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Parses JSON text into `T`; the error says why it could not.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_bindgen::JsCast;
        let value = js_sys::JSON::parse(text).map_err(|e| {
            e.dyn_ref::<js_sys::Error>()
                .map_or_else(|| "not JSON".to_owned(), |e| String::from(e.message()))
        })?;
        serde_wasm_bindgen::from_value(value).map_err(|e| e.to_string())
    }
    #[cfg(not(target_arch = "wasm32"))]
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// `value` as compact JSON text ("" if it cannot be written).
pub fn stringify<T: Serialize + ?Sized>(value: &T) -> String {
    write(value, false)
}

/// `value` as JSON text indented by two spaces ("" if it cannot be written).
pub fn pretty<T: Serialize + ?Sized>(value: &T) -> String {
    write(value, true)
}

fn write<T: Serialize + ?Sized>(value: &T, pretty: bool) -> String {
    #[cfg(target_arch = "wasm32")]
    {
        let serializer = serde_wasm_bindgen::Serializer::json_compatible();
        let Ok(value) = value.serialize(&serializer) else {
            return String::new();
        };
        let text = if pretty {
            js_sys::JSON::stringify_with_replacer_and_space(
                &value,
                &wasm_bindgen::JsValue::NULL,
                &wasm_bindgen::JsValue::from(2),
            )
        } else {
            js_sys::JSON::stringify(&value)
        };
        text.ok().and_then(|t| t.as_string()).unwrap_or_default()
    }
    #[cfg(not(target_arch = "wasm32"))]
    if pretty {
        serde_json::to_string_pretty(value).unwrap_or_default()
    } else {
        serde_json::to_string(value).unwrap_or_default()
    }
}
