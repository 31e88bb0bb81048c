package store

import (
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
)

// WithPgx runs fn on the pgx connection under conn (PostgreSQL's COPY is
// not in database/sql), inside whatever transaction is open on it.
func WithPgx(conn bun.Conn, fn func(*pgx.Conn) error) error {
	return conn.Raw(func(driverConn any) error {
		sc, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("COPY needs a pgx connection, have %T", driverConn)
		}
		return fn(sc.Conn())
	})
}
