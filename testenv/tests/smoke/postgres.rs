use ftgo_testenv::Postgres;

#[tokio::test]
async fn postgres_answers_queries_in_a_fresh_database_per_test() {
    ftgo_testenv::init_test_tracing();
    let pg = Postgres::start().await.unwrap();

    let orders = pg.create_database("orders").await.unwrap();
    let kitchen = pg.create_database("kitchen").await.unwrap();
    assert_ne!(orders.name, kitchen.name);

    let pool = orders.pool().await.unwrap();
    let (sum,): (i32,) = sqlx::query_as("SELECT 1 + 1").fetch_one(&pool).await.unwrap();
    assert_eq!(sum, 2);
    sqlx::query("CREATE TABLE tickets (id TEXT PRIMARY KEY)").execute(&pool).await.unwrap();
    sqlx::query("INSERT INTO tickets VALUES ('t-1')").execute(&pool).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM tickets").fetch_one(&pool).await.unwrap();
    assert_eq!(count, 1);

    // Database per service: the other database does not see the table.
    let other = kitchen.pool().await.unwrap();
    let err = sqlx::query("SELECT * FROM tickets").fetch_all(&other).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn dropping_postgres_stops_the_server() {
    ftgo_testenv::init_test_tracing();
    let mut pg = Postgres::start().await.unwrap();
    let pid = pg.process().pid();
    let port = pg.port();
    drop(pg);
    // SAFETY: signal 0 only asks whether the pid exists.
    let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    assert!(!alive, "postgres (pid {pid}) still running after drop");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still accepts connections");
}
