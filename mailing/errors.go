package mailing

import (
	"errors"
	"fmt"

	"github.com/servir-pe/envios/internal/mailerr"
	"github.com/servir-pe/envios/quota"
)

// refusal gives a refusal of the ledger's (the pool spent, the account
// disabled, unknown or badly named, the pool outside its period) the shape
// of the library's own errors: an *Error whose Kind is quota's sentinel and
// whose cause is quota's error. An *Error, and any other error (the
// database), is returned as it is. Every exported method returns through
// it, so a door needs only errors.As(err, *Error) to tell a refusal from a
// failure.
func refusal(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := mailerr.As(err); ok {
		return err
	}
	var ins *quota.InsufficientError
	switch {
	case errors.As(err, &ins):
		return &Error{Kind: quota.ErrInsufficient, Field: "account", Err: err,
			Public: fmt.Sprintf("account %s has %d messages left, %d needed", ins.Account, ins.Remaining, ins.Requested)}
	case errors.Is(err, quota.ErrDisabled):
		return &Error{Kind: quota.ErrDisabled, Field: "account", Public: "the account is disabled", Err: err}
	case errors.Is(err, quota.ErrOutsidePeriod):
		return &Error{Kind: quota.ErrOutsidePeriod, Field: "account", Public: "the message pool is outside its period", Err: err}
	case errors.Is(err, quota.ErrNotFound):
		return &Error{Kind: quota.ErrNotFound, Field: "account", Public: "no such account", Err: err}
	case errors.Is(err, quota.ErrInvalid):
		return &Error{Kind: quota.ErrInvalid, Field: "account", Public: "the account name must be AREA/NAME, e.g. enap/eventos", Err: err}
	}
	return err
}

// isDecided reports an error about the message itself (its account, its
// sender, its content), as opposed to a database failure.
func isDecided(err error) bool {
	_, ok := mailerr.As(refusal(err))
	return ok
}

func senderNotAllowed(account, addr string) error {
	return mailerr.New(ErrSenderNotAllowed, "from", "%s may not send as %s (see relayd sender list %s)", account, addr, account)
}

func noAccount(name string) error {
	return mailerr.Wrap(quota.ErrNotFound, "account", quota.ErrNotFound, "no account "+name)
}

func disabled(account string) error {
	return mailerr.Wrap(quota.ErrDisabled, "account", quota.ErrDisabled, account+" is disabled")
}
