use super::*;

#[test]
fn template_is_the_default_configuration() {
    assert_eq!(Config::from_toml(TEMPLATE).unwrap(), Config::default());
}

#[test]
fn values_override_defaults() {
    let c = Config::from_toml(
        "[server]\nlisten = \"127.0.0.1:9000\"\n[node]\nname = \"hq.example.ru\"",
    )
    .unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.node.name.as_deref(), Some("hq.example.ru"));
    assert_eq!(c.quic, QuicConfig::default());
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("[server]\nlisten = \"nowhere\"", "server.listen"),
        ("[server]\nlisen = \"0.0.0.0:1\"", "lisen"),
        ("[auth]\nargon2_memory_kib = 1024", "auth.argon2_memory_kib"),
        ("[node]\nname = \"Bad Name\"", "node.name"),
        ("[tls]\ncert_file = \"a.pem\"", "tls.key_file"),
        ("[quic]\nreceive_window = 1", "quic.receive_window"),
        ("[log]\nformat = \"xml\"", "log.format"),
        (
            "[apps]\nwebhook_timeout_secs = 0",
            "apps.webhook_timeout_secs",
        ),
        ("[smtp]\nhost = \"relay\"\nfrom = \"nobody\"", "smtp.from"),
        ("[http]\nmax_body_bytes = 10", "http.max_body_bytes"),
        ("[presence]\ncoalesce_ms = 0", "presence.coalesce_ms"),
        ("[push.gateways]\nmobile = \"ftp://x\"", "push.gateways"),
        ("[push]\nvapid_contact = \"me\"", "push.vapid_contact"),
        ("[federation]\nlisten = [\"tcp:7701\"]", "federation.listen"),
        ("[plugins]\nmax_cpu_ms = 0", "plugins.max_cpu_ms"),
        (
            "[plugins]\nmax_call_timeout_ms = 60001",
            "plugins.max_call_timeout_ms",
        ),
        ("[plugins]\nmax_memory_mb = 129", "plugins.max_memory_mb"),
        (
            "[metrics]\nenabled = true\nlisten = \"127.0.0.1:8780\"",
            "metrics.listen",
        ),
    ];
    for (text, key) in cases {
        let err = Config::from_toml(text).unwrap_err().to_string();
        assert!(
            err.contains(key),
            "{text:?} gave {err:?}, expected it to name {key}"
        );
    }
}

#[test]
fn effective_config_round_trips() {
    let c = Config::default();
    assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
fn environment_overrides_the_file() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "config.toml",
            "[server]\nlisten = \"127.0.0.1:1\"\nmax_connections_per_ip = 70\n",
        )?;
        jail.set_env("VECHE__SERVER__LISTEN", "127.0.0.1:2");
        jail.set_env("VECHE__AUTH__SESSION_IDLE_DAYS", "3");
        let c = Config::load(Some(Path::new("config.toml"))).unwrap();
        assert_eq!(
            c.server.listen,
            "127.0.0.1:2".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.server.max_connections_per_ip, 70);
        assert_eq!(c.auth.session_idle_days, 3);

        jail.set_env("VECHE__AUTH__SESSION_IDLE_DAYS", "0");
        let err = Config::load(Some(Path::new("config.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.session_idle_days"), "{err}");
        Ok(())
    });
}

#[test]
fn the_effective_config_hides_the_smtp_password() {
    let c = Config::from_toml("[smtp]\nhost = \"relay\"\nusername = \"u\"\npassword = \"s3cret\"")
        .unwrap();
    let shown = c.to_toml();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn the_database_is_a_postgresql_url() {
    let ok = Config::from_toml("[storage]\ndatabase = \"postgres://veche@127.0.0.1:5432/veche\"")
        .unwrap();
    assert_eq!(
        ok.storage.database.as_deref(),
        Some("postgres://veche@127.0.0.1:5432/veche")
    );
    assert!(
        Config::from_toml("[storage]\ndatabase = \"postgresql://db/veche?sslmode=require\"")
            .is_ok()
    );
    for (bad, why) in [
        ("sqlite://veche.db", "PostgreSQL URL"),
        ("postgres://veche@/veche", "no host"),
        ("postgres://veche@db:port/veche", "not a number"),
        ("postgres://veche@db:5432", "no database"),
        ("postgres://veche@db:5432/", "no database"),
    ] {
        let err = Config::from_toml(&format!("[storage]\ndatabase = \"{bad}\""))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("storage.database: "), "{bad}: {err}");
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn the_effective_config_hides_the_database_password() {
    let c =
        Config::from_toml("[storage]\ndatabase = \"postgres://veche:s3cret@db/veche\"").unwrap();
    let shown = c.to_toml();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("postgres://veche:<redacted>@db/veche"),
        "{shown}"
    );
}
