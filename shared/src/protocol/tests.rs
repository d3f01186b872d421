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
        r#"{"type":"hello","protocol":1,"role":"agent"}"#
    );
}
