//! The broker connection settings: `[broker]` keys and their `TOPICRULE_BROKER_*` overrides.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use topicrule::config::{Protocol, Settings};

/// Loads `text` as a settings file (each test parses in a file of its own).
fn parse(text: &str) -> Result<Settings, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("topicrule-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, text).unwrap();
    let settings = Settings::load(Some(&path)).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(path);
    settings
}

#[test]
fn connection_keys_are_read() {
    let s = parse(
        r#"
[broker]
url = "mqtts://iot.example.org:8883"
ca_file = "AmazonRootCA1.pem"
cert_file = "device.pem.crt"
key_file = "private.pem.key"
protocol = "3.1.1"
shared_group = "topicrule"
username = "u"
password_file = "/run/secrets/mqtt"
"#,
    )
    .unwrap();
    let b = &s.broker;
    assert_eq!(b.ca_file, Some(PathBuf::from("AmazonRootCA1.pem")));
    assert_eq!(b.cert_file, Some(PathBuf::from("device.pem.crt")));
    assert_eq!(b.key_file, Some(PathBuf::from("private.pem.key")));
    assert_eq!(b.protocol, Protocol::V311);
    assert_eq!(b.shared_group.as_deref(), Some("topicrule"));
    assert_eq!(b.password_file, Some(PathBuf::from("/run/secrets/mqtt")));
}

#[test]
fn protocol_defaults_to_5_and_rejects_unknown_versions() {
    assert_eq!(parse("[broker]\n").unwrap().broker.protocol, Protocol::V5);
    let err = parse("[broker]\nprotocol = \"3.1\"\n").unwrap_err();
    assert!(err.contains("unknown variant `3.1`"), "{err}");
}

#[test]
fn environment_overrides_the_connection_keys() {
    let env: HashMap<&str, &str> = [
        ("TOPICRULE_BROKER_CA_FILE", "ca.pem"),
        ("TOPICRULE_BROKER_CERT_FILE", "c.pem"),
        ("TOPICRULE_BROKER_KEY_FILE", "k.pem"),
        ("TOPICRULE_BROKER_PROTOCOL", "3.1.1"),
        ("TOPICRULE_BROKER_SHARED_GROUP", "g"),
        ("TOPICRULE_BROKER_PASSWORD_FILE", "pw"),
    ]
    .into();
    let vars = env.iter().map(|(n, v)| (n.to_string(), v.to_string()));
    let s = Settings::layered(toml::Table::new(), vars).unwrap();
    assert_eq!(s.broker.ca_file, Some(PathBuf::from("ca.pem")));
    assert_eq!(s.broker.cert_file, Some(PathBuf::from("c.pem")));
    assert_eq!(s.broker.key_file, Some(PathBuf::from("k.pem")));
    assert_eq!(s.broker.protocol, Protocol::V311);
    assert_eq!(s.broker.shared_group.as_deref(), Some("g"));
    assert_eq!(s.broker.password_file, Some(PathBuf::from("pw")));

    let vars = [("TOPICRULE_BROKER_PROTOCOL".to_owned(), "4".to_owned())];
    let err = Settings::layered(toml::Table::new(), vars)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`TOPICRULE_BROKER_PROTOCOL`: unknown variant `4`"),
        "{err}"
    );
}
