//! A row a copy cannot take never holds back the changes after it: it is set aside (shown in
//! the service's `/health`), every later change arrives as usual, and once the cause is fixed
//! the row applies and leaves the set.
//!
//! On MariaDB + PostgreSQL the row is the real case: a NUL written into a product name by
//! hand-written SQL in the monolith, which PostgreSQL text cannot hold. On embedded storage
//! (SQLite stores a NUL), a trigger in the catalog's own database refuses the row instead.

use std::time::{Duration, Instant};

use banyan_tests::{AppOptions, TestApp, converges, spawn_app_with, spawn_synced_catalog};
use serde_json::{Value, json};
use service_kit::db::{Backend, Database};

async fn catalog_db(app: &TestApp) -> Database {
    let url = match &app.storage.postgres {
        Some(pg) => pg.url.clone(),
        None => format!(
            "sqlite://{}?mode=rwc",
            app.storage.data_dir.path().join("catalog.db").display()
        ),
    };
    Database::connect(&url, 1).await.unwrap()
}

async fn exec(db: &Database, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn set_aside(catalog: &str) -> Value {
    let health: Value = reqwest::get(format!("{catalog}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    health["sync"]["set_aside"]["sync:products"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_copy_cannot_take_is_set_aside_and_the_rest_flows_on() {
    let app = spawn_app_with(AppOptions::seeded(20)).await;
    let catalog = spawn_synced_catalog(&app).await;
    let c = catalog.address.clone();
    converges(&format!("{c}/api/products?per_page=1"), |s, b| {
        s == 200 && b["total"] == 20
    })
    .await;
    let monolith = Database::connect(&app.storage.monolith_database_url(), 1)
        .await
        .unwrap();
    let own = catalog_db(&app).await;

    // Product 7 becomes a row this copy cannot take.
    let real_nul = own.backend == Backend::Postgres;
    if real_nul {
        let nul_name = match monolith.backend {
            Backend::MySql => "CONCAT('Bad', CHAR(0), 'Name')",
            _ => "'Bad' || char(0) || 'Name'",
        };
        exec(
            &monolith,
            &format!("UPDATE products SET name = {nul_name} WHERE id = 7"),
        )
        .await;
    } else {
        exec(&own, "CREATE TRIGGER refuse_7 BEFORE UPDATE ON products WHEN NEW.id = 7 BEGIN SELECT RAISE(ABORT, 'refused for the test'); END").await;
        exec(
            &monolith,
            "UPDATE products SET stock = stock + 1 WHERE id = 7",
        )
        .await;
    }
    // Changes after it, in the same batch and later ones. (Stock always comes from the
    // monolith; the price of a hand-written change would lose to the catalog's own edit time.)
    exec(&monolith, "UPDATE products SET stock = 1111 WHERE id = 8").await;
    let admin = app.admin_client().await;
    let r = app
        .send_json(
            &admin,
            "PATCH",
            "/api/products/9",
            &json!({"price_cents": 2222}),
        )
        .await;
    assert_eq!(r.status(), 200);
    converges(&format!("{c}/api/products/8"), |s, b| {
        s == 200 && b["stock"] == 1111
    })
    .await;
    converges(&format!("{c}/api/products/9"), |s, b| {
        s == 200 && b["price_cents"] == 2222
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while set_aside(&c).await != json!([7]) {
        assert!(
            Instant::now() < deadline,
            "product 7 was not set aside: {}",
            set_aside(&c).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        catalog
            .log()
            .contains("a row could not be applied; set aside"),
        "{}",
        catalog.log()
    );
    // Still flowing.
    let r = app
        .send_json(
            &admin,
            "PATCH",
            "/api/products/10",
            &json!({"price_cents": 3333}),
        )
        .await;
    assert_eq!(r.status(), 200);
    converges(&format!("{c}/api/products/10"), |s, b| {
        s == 200 && b["price_cents"] == 3333
    })
    .await;

    // The cause fixed: the row applies on the next retry (every 5 s) and leaves the set.
    if real_nul {
        // Renamed through the API (an edit, which the copy takes; see the README's data
        // section on field ownership).
        let r = app
            .send_json(
                &admin,
                "PATCH",
                "/api/products/7",
                &json!({"name": "Fixed Name"}),
            )
            .await;
        assert_eq!(r.status(), 200);
    } else {
        exec(&own, "DROP TRIGGER refuse_7").await;
    }
    let expected: Value = app.get("/api/products/7").await.json().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let here: Value = reqwest::get(format!("{c}/api/products/7"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if here == expected && set_aside(&c).await.is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "product 7 never recovered: {here} vs {expected}, set aside {}",
            set_aside(&c).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
