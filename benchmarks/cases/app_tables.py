"""The app's four tables filled on the server (INSERT … SELECT generate_series): many narrow rows,
in the shapes a year of the app leaves them, a few of them overdue.

  quiz_responses     all younger than their 24 h: nothing due (a domain whose runs find nothing)
  magic_link_tokens  `overdue_share` expired 3–5 h ago (SLA 2 h), the rest expiring within the hour
  meal_plans         the purchase record, kept for good: `redacted_share` older than 95 days and
                     already redacted (PDF gone), `overdue_share` 93–95 days old still holding their
                     PDF (SLA 2 days past 90), the rest younger than 90 days
  email_blacklist    `overdue_share` 93–95 days old (SLA 2 days past 90), the rest younger than 90 days

Times are relative to the server's now(), as the engine's are.
"""

from __future__ import annotations

import psycopg2


def _statements(rows: int, overdue: int, redacted_end: int) -> dict[str, str]:
    # share(i) runs from 0 to 1 over the rows, so that each group's times are spread, not equal.
    return {
        "quiz_responses": f"""
            INSERT INTO quiz_responses (id, session_id, email, answers, created_at)
            SELECT gen_random_uuid(), gen_random_uuid(), 'q' || i || '@example.invalid', '{{}}'::jsonb,
                   now() - interval '23 hours' * (i::float8 / {rows})
            FROM generate_series(1, {rows}) AS i""",
        "magic_link_tokens": f"""
            INSERT INTO magic_link_tokens (id, email, token_hash, created_at, expires_at)
            SELECT gen_random_uuid(), 't' || i || '@example.invalid', md5(i::text), e - interval '15 minutes', e
            FROM (SELECT i, CASE WHEN i <= {overdue}
                                 THEN now() - interval '3 hours' - interval '2 hours' * (i::float8 / {overdue})
                                 ELSE now() + interval '1 hour' * (i::float8 / {rows}) END AS e
                  FROM generate_series(1, {rows}) AS i) AS tokens""",
        "meal_plans": f"""
            INSERT INTO meal_plans (id, payment_id, email, pdf_blob_key, pdf_deleted_at, created_at)
            SELECT gen_random_uuid(), 'pay_' || i, 'm' || i || '@example.invalid',
                   CASE WHEN redacted THEN NULL ELSE 'plans/' || i || '.pdf' END,
                   CASE WHEN redacted THEN c + interval '90 days' END, c
            FROM (SELECT i, i > {overdue} AND i <= {redacted_end} AS redacted,
                         CASE WHEN i <= {overdue}
                              THEN now() - interval '93 days' - interval '2 days' * (i::float8 / {overdue})
                              WHEN i <= {redacted_end}
                              THEN now() - interval '95 days' - interval '800 days' * (i::float8 / {rows})
                              ELSE now() - interval '89 days' * (i::float8 / {rows}) END AS c
                  FROM generate_series(1, {rows}) AS i) AS plans""",
        "email_blacklist": f"""
            INSERT INTO email_blacklist (id, email, reason, created_at)
            SELECT gen_random_uuid(), 'b' || i || '@example.invalid', 'chargeback',
                   CASE WHEN i <= {overdue}
                        THEN now() - interval '93 days' - interval '2 days' * (i::float8 / {overdue})
                        ELSE now() - interval '89 days' * (i::float8 / {rows}) END
            FROM generate_series(1, {rows}) AS i""",
    }


def fill_app_tables(dsn: str, rows: int, overdue_share: float = 0.01, redacted_share: float = 0.8) -> dict:
    """`rows` rows in each of the four tables (see the module's docstring), then VACUUM ANALYZE, as
    autovacuum leaves a table in production. Returns the shape, for a case's details."""
    overdue = max(1, int(rows * overdue_share))
    redacted_end = overdue + int(rows * redacted_share)
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for statement in _statements(rows, overdue, redacted_end).values():
                cursor.execute(statement)
            cursor.execute("VACUUM ANALYZE")
    finally:
        connection.close()
    return {"rows_per_table": rows, "overdue_rows_per_overdue_table": overdue,
            "meal_plans_redacted_rows": redacted_end - overdue,
            "overdue_tables": ["magic_link_tokens", "meal_plans", "email_blacklist"]}
