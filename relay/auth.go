package relay

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/servir-pe/envios/internal/credential"
)

// plainServer is SASL PLAIN (RFC 4616) with replies the relay chooses: a
// malformed response is a syntax error, not an authentication failure.
type plainServer struct {
	auth func(identity, username, password string) error
	done bool
}

func (p *plainServer) Next(resp []byte) ([]byte, bool, error) {
	if p.done {
		return nil, true, errAuthSyntax
	}
	if resp == nil { // no initial response: ask for it
		return []byte{}, false, nil
	}
	p.done = true
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 || len(parts[1]) > 255 || len(parts[2]) > 1024 {
		return nil, true, errAuthSyntax
	}
	return nil, true, p.auth(string(parts[0]), string(parts[1]), string(parts[2]))
}

// loginServer is the LOGIN mechanism (draft-murchison-sasl-login), which
// go-sasl only has as a client: "Username:", then "Password:".
type loginServer struct {
	auth     func(identity, username, password string) error
	username []byte
	step     int
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if resp == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough // the initial response is the username
	case 1:
		if len(resp) == 0 || len(resp) > 255 {
			return nil, true, errAuthSyntax
		}
		l.username = bytes.Clone(resp)
		l.step = 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		if len(resp) > 1024 {
			return nil, true, errAuthSyntax
		}
		return nil, true, l.auth("", string(l.username), string(resp))
	}
	return nil, true, errAuthSyntax
}

var _ sasl.Server = (*plainServer)(nil)
var _ sasl.Server = (*loginServer)(nil)

// authenticate checks a username and password for session ss: throttled
// keys first, then the credential; every failure is answered
// Limits.AuthDelay after the attempt began, so timing tells nothing.
func (s *Server) authenticate(ss *session, identity, username, password string) error {
	start := time.Now()
	ctx := ss.ctx
	ipKey, userKey := "ip:"+ss.ip, "user:"+username
	blocked, err := s.thr.blocked(ctx, ipKey, userKey)
	if err != nil {
		return reply(ss.log, atAuth, err)
	}
	if blocked {
		ss.log.Warn("login refused: too many failures", "user", username)
		if tc := tracked(ss.conn.Conn()); tc != nil {
			tc.closeAfterReply()
		}
		return errAuthThrottle
	}
	fail := func(why string, r error) error {
		s.authFailures.Add(1)
		ss.log.Warn("login failed", "user", username, "why", why)
		if err := s.thr.fail(ctx, ipKey, userKey); err != nil {
			return reply(ss.log, atAuth, err)
		}
		pad(ctx, start, s.cfg.Limits.AuthDelay)
		return r
	}
	if identity != "" && identity != username {
		return fail("authorisation identity differs from the username", errAuthzid)
	}
	cred, hash, err := s.creds.Lookup(ctx, username)
	if errors.Is(err, credential.ErrBadCredentials) {
		// Spend the time a verification would, against a fixed hash.
		_, _ = s.verify(ctx, s.dummyHash(), password)
		return fail("unknown or revoked username", errAuthFailed)
	}
	if err != nil {
		return reply(ss.log, atAuth, err)
	}
	if !s.auths.hit(username, hash, password) {
		ok, err := s.verifyShared(ctx, username, hash, password)
		if err != nil {
			return reply(ss.log, atAuth, err)
		}
		if !ok {
			return fail("wrong password", errAuthFailed)
		}
		s.auths.add(username, hash, password)
	}
	if err := s.thr.clear(ctx, userKey); err != nil {
		return reply(ss.log, atAuth, err)
	}
	ss.cred = cred
	ss.log = ss.log.With("user", username, "account", cred.Account)
	ss.log.Info("login")
	return nil
}

// verifyShared is verify for a login, with identical verifications in
// flight shared: clients that open many connections at once with the same
// credential (a legacy application's pool, the load generator) pay one
// argon2id verification, not one each. The key holds the stored hash and
// the password's HMAC under the process's cache key, so only the same
// password against the same hash shares a result.
func (s *Server) verifyShared(ctx context.Context, username, hash, password string) (bool, error) {
	key := username + "\x00" + hash + "\x00" + string(s.auths.mac(username, password))
	ch := s.inflight.DoChan(key, func() (any, error) {
		// Not the first caller's context: the others share this result.
		return s.verify(s.ctx, hash, password)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return false, r.Err
		}
		return r.Val.(bool), nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// verify checks password against hash, at most GOMAXPROCS at a time.
func (s *Server) verify(ctx context.Context, hash, password string) (bool, error) {
	select {
	case s.hashes <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-s.hashes }()
	s.verifications.Add(1)
	return credential.Verify(hash, password)
}

func pad(ctx context.Context, start time.Time, d time.Duration) {
	t := time.NewTimer(time.Until(start.Add(d)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// authCache remembers successful logins for a while, so that a client that
// connects for every message does not pay an argon2id verification (tens
// of milliseconds of CPU) each time, as Dovecot's auth_cache does. An entry
// holds the stored hash it was verified against and an HMAC of the password
// under a key that exists only in this process; the credential is still
// looked up for every login, so a revoked or replaced credential misses.
type authCache struct {
	key [32]byte
	ttl time.Duration

	mu sync.Mutex
	m  map[string]authEntry
}

type authEntry struct {
	hash string
	mac  []byte
	at   time.Time
}

func newAuthCache(ttl time.Duration) *authCache {
	c := &authCache{ttl: ttl, m: map[string]authEntry{}}
	_, _ = rand.Read(c.key[:]) // crypto/rand.Read never fails (Go 1.24+)
	return c
}

func (c *authCache) mac(username, password string) []byte {
	h := hmac.New(sha256.New, c.key[:])
	h.Write([]byte(username))
	h.Write([]byte{0})
	h.Write([]byte(password))
	return h.Sum(nil)
}

func (c *authCache) hit(username, hash, password string) bool {
	if c.ttl < 0 {
		return false
	}
	c.mu.Lock()
	e, ok := c.m[username]
	c.mu.Unlock()
	return ok && e.hash == hash && time.Since(e.at) < c.ttl && hmac.Equal(e.mac, c.mac(username, password))
}

func (c *authCache) add(username, hash, password string) {
	if c.ttl < 0 {
		return
	}
	e := authEntry{hash: hash, mac: c.mac(username, password), at: time.Now()}
	c.mu.Lock()
	if len(c.m) >= 10_000 {
		clear(c.m)
	}
	c.m[username] = e
	c.mu.Unlock()
}
