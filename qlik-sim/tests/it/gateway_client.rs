//! The gateway's own Qlik client (`qlik-gateway-qlik`) against the simulator: the two sides of
//! the QPS API, written separately, agree on sessions, tickets and failures in both reply casings.

use crate::common::*;
use qlik_gateway_core::identity::Identity;
use qlik_gateway_qlik::config::{raw::RawQlik, validate, QlikConfig};
use qlik_gateway_qlik::{QlikError, QpsClient};
use qlik_sim::{Casing, QpsFault, SimOptions};

/// The gateway's `[qlik]` section for `sim`, through the same parsing and checks as a config file.
fn qlik_config(sim: &TestSim) -> QlikConfig {
    let pki = sim.pki();
    let toml = format!(
        "proxy_url = \"{}\"\nqps_api_url = \"{}\"\nvirtual_proxy = \"mashup\"\n\
         client_cert = {:?}\nclient_key = {:?}\nca_cert = {:?}\n",
        sim.proxy_url(),
        sim.qps_api_url(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
        pki.ca_cert.display().to_string(),
    );
    let raw: RawQlik = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::string(&toml),
    )
    .extract()
    .expect("[qlik] parses");
    validate(raw, &mut Vec::new()).expect("[qlik] is valid")
}

fn alice() -> Identity {
    Identity {
        user_directory: "CORP".into(),
        user_id: "alice".into(),
        attributes: vec![("Group".into(), "Sales".into())],
    }
}

#[tokio::test]
async fn sessions_and_tickets_in_both_reply_casings() {
    for casing in [Casing::Pascal, Casing::Camel] {
        let sim = start(SimOptions {
            reply_casing: casing,
            ..SimOptions::default()
        })
        .await;
        let qps = QpsClient::new(&qlik_config(&sim)).expect("client certificates load");
        qps.probe().await.expect("probe");

        qps.create_session(&alice(), "gw-1")
            .await
            .unwrap_or_else(|e| panic!("{casing:?}: {e}"));
        let sessions = sim.control().sessions();
        assert_eq!(sessions.len(), 1, "{casing:?}");
        let s = &sessions[0];
        assert_eq!(
            (
                s.session_id.as_str(),
                s.user_directory.as_str(),
                s.user_id.as_str()
            ),
            ("gw-1", "CORP", "alice")
        );
        assert_eq!(s.attributes, [("Group".to_string(), "Sales".to_string())]);

        let ticket = qps.request_ticket(&alice()).await.expect("ticket");
        assert!(!ticket.is_empty(), "{casing:?}");

        qps.delete_session("gw-1").await.expect("delete");
        assert!(sim.control().sessions().is_empty(), "{casing:?}");
    }
}

#[tokio::test]
async fn qps_failures_arrive_as_their_error_class() {
    let sim = start_default().await;
    let qps = QpsClient::new(&qlik_config(&sim)).expect("client certificates load");

    sim.control().set_fault(Some(QpsFault::RejectXrfkey));
    let e = qps.create_session(&alice(), "gw-2").await.unwrap_err();
    assert!(matches!(e, QlikError::XrfkeyRejected), "{e}");

    sim.control().set_fault(Some(QpsFault::Status(503)));
    let e = qps.request_ticket(&alice()).await.unwrap_err();
    assert!(matches!(e, QlikError::Status { status: 503, .. }), "{e}");

    sim.control().set_fault(None);
    qps.create_session(&alice(), "gw-2")
        .await
        .expect("recovers");
}
