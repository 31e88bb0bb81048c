//go:build !unix

package store

import "context"

// lockFile is a no-op where flock is unavailable: on such systems run
// `relayd db migrate` before starting more than one process on a SQLite file.
func lockFile(context.Context, string) (func(), error) { return func() {}, nil }

// tryLockFile always succeeds where flock is unavailable: run one process
// per SQLite file there.
func tryLockFile(string) (func(), bool, error) { return func() {}, true, nil }
