-- name: setup
-- pulsecart's schema first, then the application's (public). TCP keepalives on the server's side of the
-- connection: a client whose machine is lost is noticed (ignored on Unix sockets).
SELECT set_config('search_path', %(search_path)s, false),
       set_config('tcp_keepalives_idle', %(idle)s, false),
       set_config('tcp_keepalives_interval', %(interval)s, false),
       set_config('tcp_keepalives_count', %(count)s, false);

-- name: check_client
-- PostgreSQL 14+: during a long statement, check every interval whether the client is still there;
-- when it is gone (killed), end the statement and the session, which frees its locks.
SELECT set_config('client_connection_check_interval', %(interval)s, false);

-- name: roll_back
-- The transaction a signal left open when it landed in psycopg's own code around COMMIT (psycopg's
-- rollback never ran, so psycopg still counts it open and its rollback() would refuse).
ROLLBACK;
