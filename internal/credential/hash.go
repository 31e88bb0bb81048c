package credential

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters (RFC 9106; OWASP's 19 MiB, 2 passes, 1 lane). A
// verification costs about 20 ms of one core and 19 MiB: callers bound how
// many run at once.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	argonKeyLen  = 32
	saltLen      = 16
)

// ErrHashFormat: a stored hash is not one this package wrote.
var ErrHashFormat = errors.New("credential: malformed password hash")

// Hash returns the PHC-format argon2id hash of password with a random salt:
// $argon2id$v=19$m=19456,t=2,p=1$SALT$HASH (unpadded base64).
func Hash(password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("credential: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

type phc struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

// parseHash reads a hash Hash wrote, refusing parameters that would make a
// verification unreasonably expensive (a tampered row must not exhaust the
// server).
func parseHash(s string) (phc, error) {
	var p phc
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" || f[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, ErrHashFormat
	}
	var m, t, th uint64
	for _, kv := range strings.Split(f[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return p, ErrHashFormat
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, ErrHashFormat
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			th = n
		default:
			return p, ErrHashFormat
		}
	}
	if m < 8 || m > 256*1024 || t < 1 || t > 16 || th < 1 || th > 16 {
		return p, ErrHashFormat
	}
	salt, err := base64.RawStdEncoding.Strict().DecodeString(f[4])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return p, ErrHashFormat
	}
	key, err := base64.RawStdEncoding.Strict().DecodeString(f[5])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return p, ErrHashFormat
	}
	return phc{memory: uint32(m), time: uint32(t), threads: uint8(th), salt: salt, key: key}, nil
}

// Verify reports whether password matches hash, in constant time for a
// given hash.
func Verify(hash, password string) (bool, error) {
	p, err := parseHash(hash)
	if err != nil {
		return false, err
	}
	key := argon2.IDKey([]byte(password), p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(key, p.key) == 1, nil
}
