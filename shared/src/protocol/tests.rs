#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn a_message_of_the_wrong_shape_is_refused_with_what_is_wrong() {
    let err =
        serde_json::from_str::<Message>(r#"{"type":"hello","protocol":"one","role":"agent"}"#)
            .unwrap_err()
            .to_string();
    assert!(err.contains("invalid type"), "{err}");
    let err = serde_json::from_str::<Message>(r#"{"type":"launch_missiles"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `launch_missiles`"), "{err}");
}

#[test]
fn hello_is_one_flat_json_object() {
    let m = Message::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: Role::Agent,
    });
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"type":"hello","protocol":3,"role":"agent"}"#
    );
}

#[test]
fn a_change_batch_reads_back_as_written_whether_type_comes_first_or_not() {
    use crate::knowledge::Knowledge;
    use crate::model::{
        Body, Change, ItemKind, LeftChange, Phase, UnitChange, UnitValue, WireVersion,
    };
    let content = |body| UnitValue::Content {
        subject: "s".into(),
        sender: "x".into(),
        received_at: 1,
        headers: String::new(),
        body: Some(body),
    };
    let batch = Message::ChangeBatch(ChangeBatch {
        seq: 3,
        phase: Phase::Contents,
        replicas: vec!["a".into()],
        changes: ["m1", "m2"]
            .into_iter()
            .map(|id| Change {
                id: id.into(),
                kind: ItemKind::Message,
                created: WireVersion(0, 1),
                units: vec![UnitChange {
                    version: WireVersion(0, 2),
                    at: 5,
                    value: content(match id {
                        "m1" => Body::Text("b".repeat(3000)),
                        _ => Body::Withheld,
                    }),
                }],
            })
            .collect(),
        learned: Knowledge::new(),
        last: false,
        full: None,
        left: vec![LeftChange {
            id: "m9".into(),
            versions: vec![WireVersion(0, 7)],
        }],
    });
    let json = serde_json::to_string(&batch).unwrap();
    assert!(json.starts_with(r#"{"type":"change_batch","#), "{json}");
    assert!(json.contains(r#""body":"withheld""#), "{json}");
    assert!(
        json.contains(r#""left":[{"id":"m9","versions":[[0,7]]}]"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), batch);
    // The same object with `type` last.
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&json).unwrap();
    let tag = object.remove("type").unwrap();
    object.insert("type".into(), tag);
    let moved = serde_json::to_string(&object).unwrap();
    assert!(!moved.starts_with(r#"{"type""#));
    assert_eq!(serde_json::from_str::<Message>(&moved).unwrap(), batch);
    // Unknown fields are still refused, wherever `type` is.
    let extra = json.replacen(r#""seq":3"#, r#""seq":3,"colour":"red""#, 1);
    let err = serde_json::from_str::<Message>(&extra)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `colour`"), "{err}");
}
