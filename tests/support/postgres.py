"""The local PostgreSQL 15 (Debian's, started by scripts/test) standing in for RDS: a role with a
password for TCP, and databases holding the library's sample data (books, members, loans)."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass

import psycopg
from psycopg import sql

HOST, PORT = "127.0.0.1", 5432


@dataclass(frozen=True)
class LocalPostgres:
    user: str
    password: str
    host: str = HOST
    port: int = PORT

    def connect(self, dbname: str, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host=self.host, port=self.port, dbname=dbname, user=self.user,
                               password=self.password, autocommit=autocommit, connect_timeout=5)

    def secret_string(self) -> str:
        import json

        return json.dumps({"username": self.user, "password": self.password})

    def create_database(self, name: str) -> None:
        with self.connect("postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        with self.connect("postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))

    def databases(self) -> set[str]:
        with self.connect("postgres") as conn:
            return {str(r[0]) for r in conn.execute("select datname from pg_database").fetchall()}


def local_postgres(user: str) -> LocalPostgres:
    """A login role with a fresh password (and CREATEDB, as the RDS master user has)."""
    password = secrets.token_urlsafe(18)
    statement = (f"do $$ begin if not exists (select from pg_roles where rolname = '{user}') then "
                 f"create role {user} login createdb; end if; end $$; "
                 f"alter role {user} with login createdb password '{password}';")
    subprocess.run(["su", "postgres", "-c", "psql -v ON_ERROR_STOP=1 -q"], input=statement, text=True,
                   check=True, capture_output=True, timeout=30)
    return LocalPostgres(user=user, password=password)


def library_postgres(user: str, dbname: str) -> LocalPostgres:
    """A login role and a fresh database of its own holding the library's rows (`load_library`)."""
    pg = local_postgres(user)
    pg.create_database(dbname)
    load_library(pg, dbname)
    return pg


LIBRARY_SCHEMA = """
create table books (id serial primary key, isbn text unique not null, title text not null,
                    author text not null, created_at timestamptz not null default now());
create table members (id serial primary key, name text not null, email text unique not null,
                      created_at timestamptz not null default now());
create table loans (id serial primary key, book_id int not null references books(id),
                    member_id int not null references members(id), due_on date not null,
                    returned_at timestamptz, created_at timestamptz not null default now());
create index loans_member on loans(member_id);
"""


def load_library(pg: LocalPostgres, dbname: str, books: int = 120, members: int = 45, loans: int = 300) -> None:
    """The library's tables with generated rows."""
    with pg.connect(dbname) as conn:
        conn.execute(LIBRARY_SCHEMA)
        conn.execute("insert into books (isbn, title, author) select 'isbn-' || i, 'Book ' || i, "
                     "'Author ' || (i %% 17) from generate_series(1, %s) i", (books,))
        conn.execute("insert into members (name, email) select 'Member ' || i, 'm' || i || '@example.org' "
                     "from generate_series(1, %s) i", (members,))
        conn.execute("insert into loans (book_id, member_id, due_on, returned_at) select 1 + i %% %s, "
                     "1 + i %% %s, current_date + (i %% 21), case when i %% 3 = 0 then now() end "
                     "from generate_series(1, %s) i", (books, members, loans))
        conn.commit()
