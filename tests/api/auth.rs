use banyan_tests::{new_client, spawn_app};
use serde_json::{Value, json};

use crate::expect_error;

#[tokio::test]
async fn register_login_me_logout() {
    let app = spawn_app().await;
    let client = new_client();
    let r = app
        .send_json(
            &client,
            "POST",
            "/api/auth/register",
            &json!({"email": "Ana@Example.com", "password": "s3cret-pass", "name": "Ana"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["email"], "ana@example.com");
    assert_eq!(user["role"], "customer");
    assert!(user.get("password_hash").is_none() && user.get("password").is_none());
    expect_error(
        app.get_as(&client, "/api/auth/me").await,
        401,
        "unauthorized",
    )
    .await;

    let r = app
        .send_json(
            &client,
            "POST",
            "/api/auth/login",
            &json!({"email": "ana@example.com", "password": "s3cret-pass"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("sid="), "{cookie}");
    for attr in ["HttpOnly", "Path=/", "SameSite=Lax"] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    let me: Value = app
        .get_as(&client, "/api/auth/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me, user);

    let r = client
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    expect_error(
        app.get_as(&client, "/api/auth/me").await,
        401,
        "unauthorized",
    )
    .await;
    // The old session id is dead on the server, not just forgotten by this client.
    let sid = cookie.split(';').next().unwrap().to_owned();
    let r = new_client()
        .get(app.url("/api/auth/me"))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    // Logging out again is fine.
    assert_eq!(
        client
            .post(app.url("/api/auth/logout"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
}

#[tokio::test]
async fn registration_failures() {
    let app = spawn_app().await;
    let body = json!({"email": "bo@example.com", "password": "long enough", "name": "Bo"});
    assert_eq!(
        app.post_json("/api/auth/register", &body).await.status(),
        201
    );
    let mut again = body.clone();
    again["email"] = json!("BO@example.com");
    expect_error(
        app.post_json("/api/auth/register", &again).await,
        409,
        "conflict",
    )
    .await;
    let e = expect_error(
        app.post_json(
            "/api/auth/register",
            &json!({"email": "not-an-email", "password": "short", "name": ""}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    for f in ["email", "password", "name"] {
        assert!(e["fields"][f].is_string(), "{f}: {e}");
    }
    let e = expect_error(
        app.post_json("/api/auth/register", &json!({})).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(e["fields"]["email"], "is required");
    let r = app
        .client
        .post(app.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "bad_request").await;
}

#[tokio::test]
async fn login_failures_do_not_tell_which_part_was_wrong() {
    let app = spawn_app().await;
    app.post_json(
        "/api/auth/register",
        &json!({"email": "cy@example.com", "password": "right password", "name": "Cy"}),
    )
    .await;
    let wrong_pw = expect_error(
        app.post_json(
            "/api/auth/login",
            &json!({"email": "cy@example.com", "password": "wrong password"}),
        )
        .await,
        401,
        "unauthorized",
    )
    .await;
    let unknown = expect_error(
        app.post_json(
            "/api/auth/login",
            &json!({"email": "nobody@example.com", "password": "wrong password"}),
        )
        .await,
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(wrong_pw, unknown);
    let e = expect_error(
        app.post_json("/api/auth/login", &json!({"email": "cy@example.com"}))
            .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(e["fields"]["password"], "is required");
    // Forged or garbage cookies are simply not logged in.
    for cookie in [
        "sid=forged",
        "sid=",
        "sid=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "sid=%00%ff",
    ] {
        let r = new_client()
            .get(app.url("/api/auth/me"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        expect_error(r, 401, "unauthorized").await;
    }
}

#[tokio::test]
async fn sessions_are_stored_hashed_and_never_logged() {
    let app = spawn_app().await;
    let client = new_client();
    app.customer(&client).await;
    let r = app
        .send_json(
            &client,
            "POST",
            "/api/auth/login",
            &json!({"email": app.admin_email, "password": app.admin_password}),
        )
        .await;
    let sid = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("sid=")
        .to_owned();
    assert_eq!(sid.len(), 43);
    app.get_as(&client, "/api/auth/me").await;
    if let Some(redis) = &app.storage.redis {
        let keys = redis.keys();
        assert!(keys.iter().any(|k| k.contains("session:")), "{keys:?}");
        assert!(
            keys.iter().all(|k| !k.contains(&sid)),
            "raw session id used as a key"
        );
    }
    let log = app.process.log();
    assert!(!log.contains(&sid), "session id leaked into the log");
    assert!(
        !log.contains(&app.admin_password),
        "password leaked into the log"
    );
}

#[tokio::test]
async fn admin_from_configuration_has_the_admin_role() {
    let app = spawn_app().await;
    let admin = app.admin_client().await;
    let me: Value = app
        .get_as(&admin, "/api/auth/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
    assert_eq!(me["email"], app.admin_email);
}
