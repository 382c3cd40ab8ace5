//! `POST /prompt` validation as the real server does it, against node schemas taken
//! from the real source (`nodes.json`, each class's commit and file in its `sources`).
//!
//! A port of `validate_prompt` / `validate_inputs` in Comfy-Org/ComfyUI `execution.py`
//! v0.3.64 (@a125cd84 l.725-1069; v0.8.0 answers alike, issue 25): the same checks
//! in the same order, the same error `type`s, messages and `details` strings, and the
//! same `node_errors` map (only nodes with reasons of their own, each with
//! `dependent_outputs` and `class_type`). A node without `class_type` or of an unknown
//! class is `invalid_prompt` with an empty `extra_info`, as on those servers (the
//! newest, @cb707e9c, say `missing_node_type` instead).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// The vendored schemas and their sources.
pub fn catalog() -> &'static Value {
    static CATALOG: OnceLock<Value> = OnceLock::new();
    CATALOG.get_or_init(|| serde_json::from_str(include_str!("nodes.json")).unwrap_or_default())
}

/// `GET /object_info`: the schemas, with `LoadImage`'s combo listing the uploads'
/// top level as the real one lists the top level of `input/` (nodes.py:1633-1637).
pub fn object_info(uploads: &[String]) -> Map<String, Value> {
    let mut info = catalog()["object_info"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if let Some(load) = info.get_mut("LoadImage") {
        let mut top: Vec<&String> = uploads.iter().filter(|n| !n.contains('/')).collect();
        top.sort();
        load["input"]["required"]["image"][0] = json!(top);
    }
    info
}

/// What the server answers a refused prompt: `{"error": …, "node_errors": …}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub error: Value,
    pub node_errors: Map<String, Value>,
}

/// A node's validation result: valid, its own reasons.
type Checked = (bool, Vec<Value>);

/// A Python exception escaping `validate_inputs` (a dangling link, a bad index).
struct Escaped(String);

struct Validator<'a> {
    prompt: &'a Map<String, Value>,
    info: &'a Map<String, Value>,
    uploads: &'a HashSet<String>,
    /// Insertion-ordered like the Python dict.
    validated: Vec<(String, Checked)>,
    visiting: HashSet<String>,
}

fn error(kind: &str, message: String, details: String, extra: Value) -> Value {
    json!({"type": kind, "message": message, "details": details, "extra_info": extra})
}

/// Python's `str()` of a number as the messages print it (`1.0`, `5`, `0.005`).
fn py_num(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 && f.abs() < 1e16 {
                format!("{f:.1}")
            } else {
                format!("{f}")
            }
        }
        other => py_repr(other, false),
    }
}

/// Python's `repr()` of a JSON value (strings in single quotes, `True`, `None`).
pub fn py_repr(v: &Value, quote: bool) -> String {
    match v {
        Value::String(s) if quote => format!("'{s}'"),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| py_repr(i, true))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Number(_) => py_num(v),
        Value::Object(_) => v.to_string(),
    }
}

/// `int()`, `float()`, `str()`, `bool()` of an input value, as `validate_inputs` does.
fn convert(input_type: &str, val: &Value) -> Result<Value, String> {
    match input_type {
        "INT" => match val {
            Value::Number(n) => n
                .as_i64()
                .map(Value::from)
                .or_else(|| n.as_u64().map(Value::from))
                .or_else(|| n.as_f64().map(|f| Value::from(f.trunc() as i64)))
                .ok_or_else(|| "invalid number".to_string()),
            Value::Bool(b) => Ok(Value::from(i64::from(*b))),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("invalid literal for int() with base 10: '{s}'")),
            _ => Err(format!(
                "int() argument must be a string, a bytes-like object or a real number, not '{}'",
                py_type(val)
            )),
        },
        "FLOAT" => match val {
            Value::Number(n) => Ok(json!(n.as_f64().unwrap_or_default())),
            Value::Bool(b) => Ok(json!(if *b { 1.0 } else { 0.0 })),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map(|f| json!(f))
                .map_err(|_| format!("could not convert string to float: '{s}'")),
            _ => Err(format!(
                "float() argument must be a string or a real number, not '{}'",
                py_type(val)
            )),
        },
        "STRING" => Ok(match val {
            Value::String(_) => val.clone(),
            other => Value::String(py_repr(other, false)),
        }),
        "BOOLEAN" => Ok(Value::Bool(match val {
            Value::Bool(b) => *b,
            Value::Null => false,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        })),
        _ => Ok(val.clone()),
    }
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `validate_node_input`: equal types, `*` on either side, or overlapping unions.
fn types_match(received: &str, wanted: &str) -> bool {
    if received == wanted || received == "*" || wanted == "*" {
        return true;
    }
    let r: HashSet<&str> = received.split(',').map(str::trim).collect();
    wanted.split(',').map(str::trim).any(|w| r.contains(w))
}

impl Validator<'_> {
    fn result(&self, id: &str) -> Option<&Checked> {
        self.validated.iter().find(|(k, _)| k == id).map(|(_, c)| c)
    }

    fn record(&mut self, id: &str, checked: Checked) {
        if let Some(slot) = self.validated.iter_mut().find(|(k, _)| k == id) {
            slot.1 = checked;
        } else {
            self.validated.push((id.to_owned(), checked));
        }
    }

    /// `validate_inputs(prompt_id, prompt, item, validated)`.
    fn inputs(&mut self, id: &str) -> Result<Checked, Escaped> {
        if let Some(done) = self.result(id) {
            return Ok(done.clone());
        }
        if !self.visiting.insert(id.to_owned()) {
            return Err(Escaped(format!("Cycle detected at node '{id}'")));
        }
        let node = &self.prompt[id];
        let class_type = node["class_type"].as_str().unwrap_or_default();
        let schema = &self.info[class_type];
        let mut inputs = node["inputs"].as_object().cloned().unwrap_or_default();
        let mut declared: Vec<(String, &Value, bool)> = Vec::new();
        for (category, required) in [("required", true), ("optional", false)] {
            for (name, spec) in schema["input"][category].as_object().into_iter().flatten() {
                declared.push((name.clone(), spec, required));
            }
        }
        // Inputs checked by the class's VALIDATE_INPUTS instead (LoadImage: `image`).
        let custom: &[&str] = if class_type == "LoadImage" {
            &["image"]
        } else {
            &[]
        };
        let mut errors = Vec::new();
        let mut valid = true;
        for (x, spec, required) in declared {
            let input_type = &spec[0];
            let extra = spec.get(1).cloned().unwrap_or_else(|| json!({}));
            let config = json!([input_type, extra]);
            let Some(val) = inputs.get(&x).cloned() else {
                if required {
                    errors.push(error(
                        "required_input_missing",
                        "Required input is missing".into(),
                        x.clone(),
                        json!({"input_name": x}),
                    ));
                }
                continue;
            };
            if let Value::Array(link) = &val {
                if link.len() != 2 {
                    errors.push(error(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [node_id, slot_index]".into(),
                        x.clone(),
                        json!({"input_name": x, "input_config": config, "received_value": val}),
                    ));
                    continue;
                }
                // `prompt[o_id]` and `RETURN_TYPES[slot]` raise outside any try.
                let o_id = match &link[0] {
                    Value::String(s) if self.prompt.contains_key(s) => s.clone(),
                    other => return Err(Escaped(py_repr(other, true))),
                };
                let o_class = self.prompt[&o_id]["class_type"]
                    .as_str()
                    .unwrap_or_default();
                let outputs = self.info[o_class]["output"].as_array();
                let received = link[1]
                    .as_u64()
                    .and_then(|i| outputs?.get(usize::try_from(i).ok()?))
                    .and_then(Value::as_str)
                    .ok_or_else(|| Escaped("tuple index out of range".into()))?
                    .to_owned();
                let wanted = match input_type {
                    Value::String(s) => s.clone(),
                    _ => "COMBO".to_owned(),
                };
                if !types_match(&received, &wanted) {
                    errors.push(error(
                        "return_type_mismatch",
                        "Return type mismatch between linked nodes".into(),
                        format!("{x}, received_type({received}) mismatch input_type({wanted})"),
                        json!({"input_name": x, "input_config": config, "received_type": received, "linked_node": val}),
                    ));
                    continue;
                }
                match self.inputs(&o_id) {
                    Ok((true, _)) => {}
                    Ok((false, _)) => valid = false,
                    Err(Escaped(ex)) => {
                        valid = false;
                        let reasons = vec![error(
                            "exception_during_inner_validation",
                            "Exception when validating inner node".into(),
                            ex.clone(),
                            json!({"input_name": x, "input_config": config, "exception_message": ex, "linked_node": val}),
                        )];
                        self.record(&o_id, (false, reasons));
                    }
                }
                continue;
            }
            let val = match input_type.as_str() {
                Some(t) => match convert(t, &val) {
                    Ok(v) => v,
                    Err(ex) => {
                        errors.push(error(
                            "invalid_input_type",
                            format!("Failed to convert an input value to a {t} value"),
                            format!("{x}, {}, {ex}", py_repr(&val, false)),
                            json!({"input_name": x, "input_config": config, "received_value": val, "exception_message": ex}),
                        ));
                        continue;
                    }
                },
                None => val,
            };
            inputs.insert(x.clone(), val.clone());
            if custom.contains(&x.as_str()) {
                continue;
            }
            let number = val.as_f64();
            if let (Some(v), Some(min)) = (number, extra.get("min").and_then(Value::as_f64))
                && v < min
            {
                errors.push(error(
                    "value_smaller_than_min",
                    format!(
                        "Value {} smaller than min of {}",
                        py_num(&val),
                        py_num(&extra["min"])
                    ),
                    x.clone(),
                    json!({"input_name": x, "input_config": config, "received_value": val}),
                ));
                continue;
            }
            if let (Some(v), Some(max)) = (number, extra.get("max").and_then(Value::as_f64))
                && v > max
            {
                errors.push(error(
                    "value_bigger_than_max",
                    format!(
                        "Value {} bigger than max of {}",
                        py_num(&val),
                        py_num(&extra["max"])
                    ),
                    x.clone(),
                    json!({"input_name": x, "input_config": config, "received_value": val}),
                ));
                continue;
            }
            let options = match input_type {
                Value::Array(options) => Some(options.clone()),
                Value::String(t) if t == "COMBO" => extra["options"].as_array().cloned(),
                _ => None,
            };
            if let Some(options) = options
                && !options.contains(&val)
            {
                let (list_info, config) = if options.len() > 20 {
                    (format!("(list of length {})", options.len()), Value::Null)
                } else {
                    (py_repr(&Value::Array(options), true), config)
                };
                errors.push(error(
                    "value_not_in_list",
                    "Value not in list".into(),
                    format!("{x}: {} not in {list_info}", py_repr(&val, true)),
                    json!({"input_name": x, "input_config": config, "received_value": val}),
                ));
                continue;
            }
        }
        // LoadImage.VALIDATE_INPUTS (nodes.py:1700): the file must exist under input/.
        if class_type == "LoadImage"
            && let Some(name) = inputs.get("image").and_then(Value::as_str)
            && !self.uploads.contains(name)
        {
            errors.push(error(
                "custom_validation_failed",
                "Custom validation failed for node".into(),
                format!("image - Invalid image file: {name}"),
                json!({"input_name": "image"}),
            ));
        }
        self.visiting.remove(id);
        let checked = (valid && errors.is_empty(), errors);
        self.record(id, checked.clone());
        Ok(checked)
    }
}

/// Python's `str()` of a value (a string bare, anything else as `repr`).
fn given(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other, true),
    }
}

/// `validate_prompt`: the output nodes to run, or the refusal the server sends.
pub fn validate_prompt(
    prompt: &Map<String, Value>,
    uploads: &HashSet<String>,
) -> Result<Vec<String>, Refusal> {
    let refuse = |error: Value| Refusal {
        error,
        node_errors: Map::new(),
    };
    let info = catalog()["object_info"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut outputs = Vec::new();
    for (x, node) in prompt {
        // Both checks as v0.3.64 (@a125cd84 l.966-987) and v0.8.0 make them:
        // `invalid_prompt` with an empty `extra_info` (only the newest servers say
        // `missing_node_type`, with the node's title).
        let Some(class_type) = node.get("class_type") else {
            return Err(refuse(error(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.".into(),
                format!("Node ID '#{x}'"),
                json!({}),
            )));
        };
        let schema = class_type.as_str().and_then(|c| info.get(c));
        let Some(schema) = schema else {
            let shown = given(class_type);
            return Err(refuse(error(
                "invalid_prompt",
                format!("Cannot execute because node {shown} does not exist."),
                format!("Node ID '#{x}'"),
                json!({}),
            )));
        };
        if schema["output_node"] == true {
            outputs.push(x.clone());
        }
    }
    if outputs.is_empty() {
        return Err(refuse(error(
            "prompt_no_outputs",
            "Prompt has no outputs".into(),
            String::new(),
            json!({}),
        )));
    }
    let mut v = Validator {
        prompt,
        info: &info,
        uploads,
        validated: Vec::new(),
        visiting: HashSet::new(),
    };
    let mut good = Vec::new();
    let mut failed: Vec<Vec<Value>> = Vec::new();
    let mut node_errors = Map::new();
    for o in &outputs {
        let (valid, reasons) = match v.inputs(o) {
            Ok(checked) => checked,
            Err(Escaped(ex)) => {
                let reasons = vec![error(
                    "exception_during_validation",
                    "Exception when validating node".into(),
                    ex,
                    json!({}),
                )];
                v.record(o, (false, reasons.clone()));
                v.visiting.clear();
                (false, reasons)
            }
        };
        if valid {
            good.push(o.clone());
            continue;
        }
        failed.push(reasons);
        for (node_id, (ok, reasons)) in &v.validated {
            if *ok || reasons.is_empty() {
                continue;
            }
            let entry = node_errors.entry(node_id.clone()).or_insert_with(|| {
                json!({"errors": reasons, "dependent_outputs": [],
                       "class_type": prompt[node_id]["class_type"]})
            });
            if let Some(deps) = entry["dependent_outputs"].as_array_mut() {
                deps.push(json!(o));
            }
        }
    }
    if good.is_empty() {
        let details: Vec<String> = failed
            .iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["message"].as_str().unwrap_or_default(),
                    e["details"].as_str().unwrap_or_default()
                )
            })
            .collect();
        return Err(Refusal {
            error: error(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation".into(),
                details.join("\n"),
                json!({}),
            ),
            node_errors,
        });
    }
    Ok(good)
}

/// Every input's value after validation's conversions, for the graph evaluation.
pub fn index(prompt: &Map<String, Value>) -> HashMap<String, (String, Map<String, Value>)> {
    prompt
        .iter()
        .map(|(id, n)| {
            (
                id.clone(),
                (
                    n["class_type"].as_str().unwrap_or_default().to_owned(),
                    n["inputs"].as_object().cloned().unwrap_or_default(),
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Map<String, Value> {
        let mut g: Value = serde_json::from_str(include_str!(
            "../../../edge/src/providers/comfyui_flux_depth_dev.json"
        ))
        .unwrap();
        g["4"]["inputs"]["image"] = json!("parallax/j/in.png");
        g.as_object().cloned().unwrap()
    }

    fn uploads() -> HashSet<String> {
        HashSet::from(["parallax/j/in.png".to_owned()])
    }

    #[test]
    fn the_shipped_workflow_passes() {
        assert_eq!(
            validate_prompt(&shipped(), &uploads()),
            Ok(vec!["14".into()])
        );
    }

    #[test]
    fn a_missing_required_input_is_refused_like_the_real_server() {
        let mut g = shipped();
        g["5"]["inputs"]
            .as_object_mut()
            .unwrap()
            .remove("resolution_steps");
        let r = validate_prompt(&g, &uploads()).unwrap_err();
        assert_eq!(r.error["type"], "prompt_outputs_failed_validation");
        assert_eq!(r.error["message"], "Prompt outputs failed validation");
        // The output node has no reason of its own: details stay empty.
        assert_eq!(r.error["details"], "");
        assert_eq!(
            Value::Object(r.node_errors),
            json!({"5": {"errors": [{"type": "required_input_missing", "message": "Required input is missing",
                                     "details": "resolution_steps", "extra_info": {"input_name": "resolution_steps"}}],
                         "dependent_outputs": ["14"], "class_type": "ImageScaleToTotalPixels"}})
        );
    }

    #[test]
    fn ranges_combos_images_and_links_are_checked() {
        let mut g = shipped();
        g["15"]["inputs"]["megapixels"] = json!(0.005);
        g["12"]["inputs"]["sampler_name"] = json!("eulerx");
        g["4"]["inputs"]["image"] = json!("gone.png");
        g["8"]["inputs"]["conditioning"] = json!(["3", 0]);
        let r = validate_prompt(&g, &uploads()).unwrap_err();
        let e = |id: &str| r.node_errors[id]["errors"][0].clone();
        assert_eq!(e("15")["type"], "value_smaller_than_min");
        assert_eq!(e("15")["message"], "Value 0.005 smaller than min of 0.01");
        assert_eq!(e("12")["type"], "value_not_in_list");
        assert_eq!(
            e("12")["details"],
            "sampler_name: 'eulerx' not in (list of length 44)"
        );
        assert_eq!(e("4")["type"], "custom_validation_failed");
        assert_eq!(e("4")["details"], "image - Invalid image file: gone.png");
        assert_eq!(e("8")["type"], "return_type_mismatch");
        assert_eq!(
            e("8")["details"],
            "conditioning, received_type(VAE) mismatch input_type(CONDITIONING)"
        );
        // The output node's own reasons are the details (here: KSampler's).
        assert!(r.node_errors["12"]["dependent_outputs"] == json!(["14"]));
    }

    #[test]
    fn graph_level_refusals() {
        let mut g = shipped();
        g["6"]["class_type"] = json!("DepthAnythingV3Preprocessor");
        let r = validate_prompt(&g, &uploads()).unwrap_err();
        assert_eq!(r.error["type"], "invalid_prompt");
        assert_eq!(
            r.error["message"],
            "Cannot execute because node DepthAnythingV3Preprocessor does not exist."
        );
        assert_eq!(r.error["details"], "Node ID '#6'");
        assert_eq!(r.error["extra_info"], json!({}));
        let mut g = shipped();
        g["6"].as_object_mut().unwrap().remove("class_type");
        let r = validate_prompt(&g, &uploads()).unwrap_err();
        assert_eq!(r.error["type"], "invalid_prompt");
        assert_eq!(
            r.error["message"],
            "Cannot execute because a node is missing the class_type property."
        );
        assert_eq!(r.error["extra_info"], json!({}));
        let mut g = shipped();
        g.remove("14");
        assert_eq!(
            validate_prompt(&g, &uploads()).unwrap_err().error["type"],
            "prompt_no_outputs"
        );
        let mut g = shipped();
        g["13"]["inputs"]["samples"] = json!(["99", 0]);
        let r = validate_prompt(&g, &uploads()).unwrap_err();
        // prompt['99'] raises KeyError inside node 14's try around node 13.
        let e = &r.node_errors["13"]["errors"][0];
        assert_eq!(e["type"], "exception_during_inner_validation");
        assert_eq!(e["details"], "'99'");
    }

    #[test]
    fn object_info_has_every_node_the_workflow_uses_with_its_source() {
        let info = object_info(&["a.png".into(), "parallax/j/in.png".into()]);
        for node in shipped().values() {
            let class = node["class_type"].as_str().unwrap();
            assert!(info.contains_key(class), "{class}");
            assert!(
                catalog()["sources"][class].is_string(),
                "{class} has no source"
            );
        }
        assert_eq!(
            info["LoadImage"]["input"]["required"]["image"][0],
            json!(["a.png"])
        );
        // As v0.8.0 lists them: the newer samplers, a V3 node's combo in the COMBO
        // form, and no `is_input_list` (a schema field NodeInfoV1 does not carry).
        let samplers = &info["KSampler"]["input"]["required"]["sampler_name"][0];
        assert!(
            samplers
                .as_array()
                .unwrap()
                .contains(&json!("exp_heun_2_x0_sde"))
        );
        let method = &info["ImageScaleToTotalPixels"]["input"]["required"]["upscale_method"];
        assert_eq!(method[0], "COMBO");
        assert_eq!(method[1]["options"][0], "nearest-exact");
        assert!(info["RebatchImages"].get("is_input_list").is_none());
        let mut g = shipped();
        g["12"]["inputs"]["sampler_name"] = json!("exp_heun_2_x0");
        g["5"]["inputs"]["upscale_method"] = json!("bicubic");
        assert!(validate_prompt(&g, &uploads()).is_ok());
        g["5"]["inputs"]["upscale_method"] = json!("cubic");
        let r = validate_prompt(&g, &uploads()).unwrap_err();
        assert_eq!(r.node_errors["5"]["errors"][0]["type"], "value_not_in_list");
    }
}
