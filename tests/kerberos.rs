#![cfg(feature = "kerberos")]
mod common;
use common::kdc::{self, Kdc};
use common::*;

#[tokio::test]
async fn experiment() {
    let kdc = Kdc::start();
    let env = Env::with(Setup {
        auth: Some(format!("[auth]\nprovider = \"negotiate\"\n[auth.negotiate]\nkeytab = \"{}\"\nreplay_cache = \"file2:{}\"\n", kdc.keytab().display(), kdc.path("rc").display())),
        public_host: Some("localhost".into()),
        ..Setup::default()
    }).await;
    let cc = kdc.ccache("alice", None, &["HTTP/localhost"]);
    let mut ctx = kdc::client_ctx(
        &cc,
        "HTTP/localhost@TEST.LOCAL",
        kdc::GSS_MECH_KRB5,
        kdc::DCE_STYLE,
    );
    let t1 = ctx.step(None, None).unwrap().unwrap();
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("authorization", format!("Negotiate {}", kdc::b64(&t1)))
        .send()
        .await
        .unwrap();
    println!("leg1 {} {:?}", r.status(), r.headers());
    let www = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .trim_start_matches("Negotiate ")
        .to_string();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let t2 = ctx.step(Some(&kdc::unb64(&www)), None).unwrap();
    println!(
        "client after leg1: token={:?}",
        t2.as_ref().map(|t| t.len())
    );
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header(
            "authorization",
            format!("Negotiate {}", kdc::b64(&t2.unwrap())),
        )
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    println!("leg2 {} {:?}", r.status(), r.headers());
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("authorization", "Negotiate AAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .unwrap();
    println!("garbage {} {}", r.status(), r.text().await.unwrap());
    env.stop().await;
}
