package store

import (
	"context"
	"database/sql/driver"
	"fmt"
	"sync"

	"modernc.org/sqlite"
)

// SQLite allows one writer at a time. Left to itself, a second writer waits
// in SQLite's busy handler, which polls with sleeps of up to 100 ms: under
// load (64 goroutines charging one account) waiters are served slowly and
// out of order. gatedConnector queues this process's write transactions on
// a FIFO semaphore instead, so the lock passes to the next writer as soon
// as the previous one commits; the busy timeout remains for contention
// with other processes (a CLI command beside `relayd serve`).
type gatedConnector struct {
	driver.Connector
	gate chan struct{}
}

func newGatedConnector(dsn string) (*gatedConnector, error) {
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: SQLite DSN: %w", err)
	}
	return &gatedConnector{Connector: c, gate: make(chan struct{}, 1)}, nil
}

// sqliteConn is what modernc.org/sqlite's connections implement; embedding
// it keeps every optional interface visible to database/sql.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

func (c *gatedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := conn.(sqliteConn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("store: SQLite connection of type %T lacks context support", conn)
	}
	return &gatedConn{sqliteConn: sc, gate: c.gate}, nil
}

type gatedConn struct {
	sqliteConn
	gate chan struct{}
}

// BeginTx waits its turn for read-write transactions; read-only ones run
// beside writers, as WAL allows.
func (c *gatedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if opts.ReadOnly {
		return c.sqliteConn.BeginTx(ctx, opts)
	}
	select {
	case c.gate <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	tx, err := c.sqliteConn.BeginTx(ctx, opts)
	if err != nil {
		<-c.gate
		return nil, err
	}
	return &gatedTx{Tx: tx, release: sync.OnceFunc(func() { <-c.gate })}, nil
}

type gatedTx struct {
	driver.Tx
	release func()
}

func (t *gatedTx) Commit() error {
	defer t.release()
	return t.Tx.Commit()
}

func (t *gatedTx) Rollback() error {
	defer t.release()
	return t.Tx.Rollback()
}
