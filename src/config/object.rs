//! Reading a configuration object: typed getters whose errors name the
//! field (`providers[0].jwks.remote.cluster`), and which refuse unknown keys.

use super::ConfigError;

/// A JSON object being validated, with its path for error messages.
pub struct Obj<'a> {
    path: String,
    pub map: &'a serde_json::Map<String, serde_json::Value>,
}

impl<'a> Obj<'a> {
    pub fn new(value: &'a serde_json::Value, path: &str) -> Result<Obj<'a>, ConfigError> {
        match value.as_object() {
            Some(map) => Ok(Obj {
                path: path.to_string(),
                map,
            }),
            None => Err(ConfigError {
                field: path.to_string(),
                message: format!("must be an object, found {}", kind(value)),
            }),
        }
    }

    pub fn field(&self, key: &str) -> String {
        match (self.path.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.path.clone(),
            (false, false) => format!("{}.{key}", self.path),
        }
    }

    pub fn error(&self, key: &str, message: String) -> ConfigError {
        ConfigError {
            field: self.field(key),
            message,
        }
    }

    pub fn only(&self, allowed: &[&str]) -> Result<(), ConfigError> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(self.error(
                unknown,
                format!("unknown key; expected one of: {}", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a serde_json::Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn wrong(&self, key: &str, expected: &str, found: &serde_json::Value) -> ConfigError {
        self.error(key, format!("must be {expected}, found {}", kind(found)))
    }

    pub fn optional_str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    pub fn required_str(&self, key: &str) -> Result<&'a str, ConfigError> {
        self.optional_str(key)?
            .ok_or_else(|| self.error(key, "is required".into()))
    }

    pub fn optional_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }

    pub fn optional_u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer", v)),
        }
    }

    pub fn optional_obj(&self, key: &str) -> Result<Option<Obj<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Obj::new(v, &self.field(key)).map(Some),
        }
    }

    pub fn required_obj(&self, key: &str) -> Result<Obj<'a>, ConfigError> {
        self.optional_obj(key)?
            .ok_or_else(|| self.error(key, "is required".into()))
    }

    pub fn required_list(&self, key: &str) -> Result<&'a Vec<serde_json::Value>, ConfigError> {
        match self.get(key) {
            None => Err(self.error(key, "is required".into())),
            Some(serde_json::Value::Array(list)) if list.is_empty() => {
                Err(self.error(key, "must not be empty".into()))
            }
            Some(serde_json::Value::Array(list)) => Ok(list),
            Some(other) => Err(self.wrong(key, "a list", other)),
        }
    }

    /// A non-empty list of strings, when present.
    pub fn optional_str_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        let list = self.required_list(key)?;
        list.iter()
            .enumerate()
            .map(|(i, v)| match v {
                serde_json::Value::String(s) => Ok(s.clone()),
                other => Err(self.wrong(&format!("{key}[{i}]"), "a string", other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// One of a fixed set of strings, as its value; the first when absent.
    pub fn choice<T: Copy>(&self, key: &str, options: &[(&str, T)]) -> Result<T, ConfigError> {
        let Some(given) = self.optional_str(key)? else {
            return Ok(options[0].1);
        };
        match options.iter().find(|(name, _)| *name == given) {
            Some((_, value)) => Ok(*value),
            None => {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
                Err(self.error(key, format!("{given:?} is not one of {}", names.join(", "))))
            }
        }
    }

    pub fn required_str_list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        self.optional_str_list(key)?
            .ok_or_else(|| self.error(key, "is required".into()))
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}
