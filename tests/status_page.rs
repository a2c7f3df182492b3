//! The admin status page, loaded in headless Chromium: a region turning down shows as down.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{
    Server, ZONE,
    endpoint::{Endpoint, Mode},
};

/// The page as Chromium renders it (the DOM after load).
fn render(chromium: &str, url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-domain-reliability",
            "--no-default-browser-check",
            // The page is addressed by IP: no name may resolve, so nothing leaves loopback.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
}

#[test]
fn the_status_page_shows_a_region_turning_down() {
    let Some(chromium) = chromium() else {
        // CI installs Chromium (scripts/test): there a missing browser is a failure, never a
        // silent pass. On a developer's machine without it the test says it did not run.
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed: scripts/test installs it (apt-get install chromium)"
        );
        eprintln!(
            "SKIPPED: chromium is not installed (scripts/test installs it; apt-get install chromium)"
        );
        return;
    };
    let eu = Endpoint::start(Mode::Ok);
    let check = format!(
        "{{ http: \"{}\", interval: 200ms, timeout: 150ms, fall: 2, rise: 2 }}",
        eu.url()
    );
    let zone = ZONE.replace(
        "    addresses: [203.0.113.20, \"2001:db8:20::1\"]",
        &format!("    addresses: [203.0.113.20]\n    check: {check}"),
    );
    let server = Server::start(&zone);
    let url = format!("http://{}/", server.admin.expect("admin"));

    let page = render(&chromium, &url);
    assert!(page.contains("<title>regiondns status</title>"), "{page}");
    assert!(
        page.contains(r#"<tr id="llm.example.com./eu-west" class="up">"#),
        "{page}"
    );
    assert!(page.contains("service api.llm.example.com."), "{page}");
    assert!(
        page.contains(r#"http-equiv="refresh""#),
        "refreshes itself: {page}"
    );

    eu.set(Mode::Fail);
    let start = Instant::now();
    loop {
        let page = render(&chromium, &url);
        if page.contains(r#"<tr id="llm.example.com./eu-west" class="down">"#) {
            assert!(
                page.contains("2 consecutive failures, last: HTTP 503"),
                "the reason: {page}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never shown down: {page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
