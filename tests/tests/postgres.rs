//! The shared harness's PostgreSQL: a real cluster from Debian's package,
//! made with `initdb` and started with `pg_ctl` as an unprivileged user on
//! loopback, for the replicated store's tests. A committed row survives a
//! SIGKILL of the server (recovery from its write-ahead log); what was
//! never committed is gone.

use meldnet_tests::postgres::PgCluster;

#[tokio::test]
async fn a_committed_row_survives_a_kill_of_the_server_and_an_open_transaction_does_not() {
    let pg = PgCluster::start().unwrap();
    let (client, conn) = tokio_postgres::connect(&pg.conninfo("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", pg.log()));
    let conn = tokio::spawn(conn);
    let v: String = client
        .query_one("show synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "on", "a commit returns after its WAL is flushed");
    client
        .batch_execute("create table reports (id text primary key, body bytea not null)")
        .await
        .unwrap();
    client
        .execute(
            "insert into reports values ($1, $2)",
            &[&"r1", &vec![7u8; 759]],
        )
        .await
        .unwrap();
    client.batch_execute("begin").await.unwrap();
    client
        .execute(
            "insert into reports values ($1, $2)",
            &[&"r2", &vec![8u8; 759]],
        )
        .await
        .unwrap();
    // Killed mid-transaction: r1 was acknowledged, r2 was not.
    pg.kill().unwrap();
    assert!(client.query_one("select 1", &[]).await.is_err());
    drop(client);
    let _ = conn.await;
    pg.restart().unwrap();
    let (client, conn) = tokio_postgres::connect(&pg.conninfo("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", pg.log()));
    tokio::spawn(conn);
    let rows = client
        .query("select id, length(body) from reports order by id", &[])
        .await
        .unwrap();
    let got: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![("r1".to_string(), 759)]);
    assert!(
        pg.log().contains("database system was interrupted"),
        "{}",
        pg.log()
    );
}
