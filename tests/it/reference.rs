//! The reference pages under `docs/` are generated from the code that defines what they
//! describe; each committed copy must equal what its generator writes now. Run with
//! `OTPD_BLESS=1` to rewrite the committed pages instead of comparing them.

use std::path::Path;

/// Compares `docs/<page>` with `generated`, or rewrites it under `OTPD_BLESS=1`.
fn check_page(page: &str, generated: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs").join(page);
    if std::env::var_os("OTPD_BLESS").is_some() {
        std::fs::write(&path, generated).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/{page} differs from what the code generates; run `OTPD_BLESS=1 cargo test --test it reference` \
         and commit the result"
    );
}

#[test]
fn configuration_page_is_generated_from_the_config_sections() {
    check_page("configuration.md", &otpd::config::Config::reference_markdown());
}

#[test]
fn limits_page_is_generated_from_the_presets() {
    check_page("limits.md", &otpd::config::LimitsConfig::presets_markdown());
}

#[test]
fn errors_page_is_generated_from_the_problem_catalogue() {
    check_page("errors.md", &otpd::http::openapi::errors_markdown());
}

#[test]
fn metrics_page_is_generated_from_the_metric_catalogues() {
    check_page("metrics.md", &otpd::metrics::reference_markdown());
}
