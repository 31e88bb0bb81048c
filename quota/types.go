package quota

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// Origin says through which door a ledger entry came.
type Origin string

// The origins of ledger entries.
const (
	OriginLibrary  Origin = "library"  // the in-process Go package mailing
	OriginSMTP     Origin = "smtp"     // the submission relay
	OriginHTTP     Origin = "http"     // the HTTPS API
	OriginCampaign Origin = "campaign" // a campaign run
	OriginCLI      Origin = "cli"      // an admin command
)

// Valid reports whether o is one of the known origins.
func (o Origin) Valid() bool {
	switch o {
	case OriginLibrary, OriginSMTP, OriginHTTP, OriginCampaign, OriginCLI:
		return true
	}
	return false
}

// Kind is the kind of a ledger entry.
type Kind string

// The kinds of ledger entries.
const (
	KindAllocate Kind = "allocate"
	KindTransfer Kind = "transfer"
	KindCharge   Kind = "charge"
	KindRelease  Kind = "release"
)

// Valid reports whether k is one of the four entry kinds.
func (k Kind) Valid() bool {
	switch k {
	case KindAllocate, KindTransfer, KindCharge, KindRelease:
		return true
	}
	return false
}

// Pool is a message pool: what was bought, for which period, and how much
// of it is allocated to accounts.
type Pool struct {
	ID        int64
	Name      string
	Total     int64     // messages bought
	Allocated int64     // sum of the accounts' allocations
	StartsAt  time.Time // first instant of validity (UTC)
	EndsAt    time.Time // first instant after validity (UTC)
	CreatedAt time.Time
}

// Unallocated is what no account holds yet.
func (p Pool) Unallocated() int64 { return p.Total - p.Allocated }

// ValidAt reports whether t lies in the pool's validity period.
func (p Pool) ValidAt(t time.Time) bool { return !t.Before(p.StartsAt) && t.Before(p.EndsAt) }

// Account is a departmental account with its allocation from a pool.
type Account struct {
	ID          int64
	Pool        string // pool name
	Name        string // "area/name", e.g. "enap/eventos"
	Area        string // "enap"
	Origin      string // where its mail comes from: "platform" (campaigns) or "system" (information systems)
	Description string
	Allocation  int64
	Used        int64
	Disabled    bool
	CreatedAt   time.Time
}

// Remaining is what the account can still send.
func (a Account) Remaining() int64 { return a.Allocation - a.Used }

// Entry is one ledger movement.
type Entry struct {
	ID        int64
	Pool      string
	Kind      Kind
	Account   string // the account allocated to, charged, released, or transferred to
	From      string // the source account of a transfer; empty otherwise
	Amount    int64
	Origin    Origin
	Actor     string
	Reason    string
	Reference string
	At        time.Time
}

// Balance is a pool with its accounts and their totals.
type Balance struct {
	Pool     Pool
	Accounts []Account
	Used     int64 // sum over accounts
}

// Remaining is what the pool's accounts can still send together.
func (b Balance) Remaining() int64 { return b.Pool.Allocated - b.Used }

var (
	// ErrInsufficient: the account's remaining allocation (or, for a
	// transfer, its unused allocation) cannot cover the request. The error
	// is an *InsufficientError that says what remains.
	ErrInsufficient = errors.New("quota: insufficient allocation")
	// ErrUnallocated: an allocation asks for more than the pool has
	// unallocated. The error is an *UnallocatedError.
	ErrUnallocated = errors.New("quota: not enough unallocated messages in the pool")
	// ErrOutsidePeriod: a charge was attempted outside the pool's
	// validity period. The error is a *PeriodError.
	ErrOutsidePeriod = errors.New("quota: outside the pool's validity period")
	// ErrDisabled: the account is disabled and cannot be charged.
	ErrDisabled = errors.New("quota: account disabled")
	// ErrNotFound: no pool or account of that name.
	ErrNotFound = errors.New("quota: not found")
	// ErrExists: a pool or account of that name already exists.
	ErrExists = errors.New("quota: already exists")
	// ErrInvalid: a malformed request (amount, name, origin, kind…).
	ErrInvalid = errors.New("quota: invalid request")
	// ErrOverRelease: a release asks for more than its reference was
	// charged and has not yet been released.
	ErrOverRelease = errors.New("quota: release exceeds the charge")
	// ErrConflict: a plan differs from the pool already in the database.
	ErrConflict = errors.New("quota: plan conflicts with the database")
)

// InsufficientError is returned when an account cannot cover a charge or a
// transfer. It matches ErrInsufficient.
type InsufficientError struct {
	Account   string
	Requested int64
	Remaining int64 // what the account can still send (charge) or give (transfer)
	Transfer  bool  // the request was a transfer out of Account
}

func (e *InsufficientError) Error() string {
	if e.Transfer {
		return fmt.Sprintf("quota: account %s has %d unused messages, cannot transfer %d", e.Account, e.Remaining, e.Requested)
	}
	return fmt.Sprintf("quota: account %s has %d messages left, %d requested", e.Account, e.Remaining, e.Requested)
}

// Is makes errors.Is(err, ErrInsufficient) true.
func (e *InsufficientError) Is(target error) bool { return target == ErrInsufficient }

// UnallocatedError is returned when an allocation exceeds what the pool has
// unallocated. It matches ErrUnallocated.
type UnallocatedError struct {
	Pool        string
	Requested   int64
	Unallocated int64
}

func (e *UnallocatedError) Error() string {
	return fmt.Sprintf("quota: pool %s has %d unallocated messages, %d requested", e.Pool, e.Unallocated, e.Requested)
}

// Is makes errors.Is(err, ErrUnallocated) true.
func (e *UnallocatedError) Is(target error) bool { return target == ErrUnallocated }

// PeriodError is returned for a charge outside the pool's validity period.
// It matches ErrOutsidePeriod.
type PeriodError struct {
	Pool             string
	StartsAt, EndsAt time.Time
	At               time.Time
}

func (e *PeriodError) Error() string {
	state := "expired on"
	when := e.EndsAt
	if e.At.Before(e.StartsAt) {
		state, when = "starts on", e.StartsAt
	}
	return fmt.Sprintf("quota: pool %s %s %s", e.Pool, state, when.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrOutsidePeriod) true.
func (e *PeriodError) Is(target error) bool { return target == ErrOutsidePeriod }

var namePart = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$`)

// ParseAccountName checks and normalises an account name of the form
// "area/name" (lowercase letters, digits and inner hyphens, each part at
// most 40 characters) and returns it with its area.
func ParseAccountName(s string) (name, area string, err error) {
	s = strings.ToLower(strings.TrimSpace(s))
	area, rest, ok := strings.Cut(s, "/")
	if !ok || !namePart.MatchString(area) || !namePart.MatchString(rest) {
		return "", "", fmt.Errorf("%w: account name %q must be AREA/NAME (lowercase letters, digits, hyphens), e.g. enap/eventos", ErrInvalid, s)
	}
	return s, area, nil
}

// ValidatePoolName checks a pool name: lowercase letters, digits and
// inner hyphens, at most 40 characters.
func ValidatePoolName(s string) error {
	if !namePart.MatchString(s) {
		return fmt.Errorf("%w: pool name %q must be lowercase letters, digits and hyphens, e.g. servir-2026", ErrInvalid, s)
	}
	return nil
}

// MaxAmount bounds every amount, far above any real pool, so sums of
// amounts can never overflow.
const MaxAmount = 1 << 40

func checkAmount(n int64) error {
	if n <= 0 || n > MaxAmount {
		return fmt.Errorf("%w: amount must be a positive whole number up to %d, got %d", ErrInvalid, int64(MaxAmount), n)
	}
	return nil
}

// Database rows. Public types above are what callers see; these mirror the
// tables of migrations/…_quota.tx.up.sql.

type poolRow struct {
	bun.BaseModel `bun:"table:quota_pools"`
	ID            int64 `bun:",pk,autoincrement"`
	Name          string
	Total         int64
	Allocated     int64
	StartsAt      time.Time
	EndsAt        time.Time
	CreatedAt     time.Time
}

func (r poolRow) pool() Pool {
	return Pool{ID: r.ID, Name: r.Name, Total: r.Total, Allocated: r.Allocated,
		StartsAt: r.StartsAt.UTC(), EndsAt: r.EndsAt.UTC(), CreatedAt: r.CreatedAt.UTC()}
}

type accountRow struct {
	bun.BaseModel `bun:"table:quota_accounts"`
	ID            int64 `bun:",pk,autoincrement"`
	PoolID        int64
	Name          string
	Area          string
	Origin        string
	Description   string
	Allocation    int64
	Used          int64
	Disabled      bool
	CreatedAt     time.Time
	PoolName      string `bun:",scanonly"`
}

func (r accountRow) account() Account {
	return Account{ID: r.ID, Pool: r.PoolName, Name: r.Name, Area: r.Area, Origin: r.Origin,
		Description: r.Description, Allocation: r.Allocation, Used: r.Used, Disabled: r.Disabled,
		CreatedAt: r.CreatedAt.UTC()}
}

type entryRow struct {
	bun.BaseModel `bun:"table:quota_entries"`
	ID            int64 `bun:",pk,autoincrement"`
	PoolID        int64
	Kind          Kind
	AccountID     int64
	FromAccountID int64 `bun:",nullzero"`
	Amount        int64
	Origin        Origin
	Actor         string
	Reason        string
	Reference     string
	CreatedAt     time.Time
}
