package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/dkimkey"
	"github.com/servir-pe/envios/mailing"
)

func runDomainAdd(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("domain add", &g)
	selector := fs.String("selector", "", "DKIM selector (default e+date, e.g. e20261126)")
	alg := fs.String("key", "rsa2048", "key type: rsa2048 or ed25519")
	keyFile := dkimKeyFileFlag(fs, e)
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	if *alg != string(dkimkey.RSA2048) && *alg != string(dkimkey.Ed25519) {
		return usagef("--key: %q is not rsa2048 or ed25519", *alg)
	}
	db, sealer, err := e.openSealed(ctx, &g, *keyFile)
	if err != nil {
		return err
	}
	defer db.Close()
	k, err := dkimkey.Add(ctx, db, sealer, pos[0], *selector, dkimkey.Algorithm(*alg), e.now())
	if err != nil {
		return err
	}
	name, value := k.Record()
	fmt.Fprintf(e.stdout, "added %s DKIM key %s for %s; publish this DNS record before sending:\n\n", k.Algorithm, k.Selector, k.Domain)
	fmt.Fprintf(e.stdout, "%s. IN TXT %s\n", name, quoteTXT(value))
	return nil
}

func runDomainRotate(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("domain rotate", &g)
	keyFile := dkimKeyFileFlag(fs, e)
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	db, sealer, err := e.openSealed(ctx, &g, *keyFile)
	if err != nil {
		return err
	}
	defer db.Close()
	keys, err := dkimkey.Rotate(ctx, db, sealer, pos[0], e.now())
	if err != nil {
		return err
	}
	for _, k := range keys {
		name, value := k.Record()
		fmt.Fprintf(e.stdout, "new %s DKIM key %s for %s signs from now on; publish:\n%s. IN TXT %s\n\n", k.Algorithm, k.Selector, k.Domain, name, quoteTXT(value))
	}
	fmt.Fprintln(e.stdout, "The old keys keep signing nothing new once these are used; retire them with relayd domain retire DOMAIN SELECTOR.")
	return nil
}

func runDomainList(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("domain list", &g)
	_, db, _, err := e.parseAndOpen(ctx, fs, &g, args, 0, 0)
	if err != nil {
		return err
	}
	defer db.Close()
	keys, err := dkimkey.List(ctx, db)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		fmt.Fprintln(e.stdout, "no DKIM keys (relayd domain add DOMAIN)")
		return nil
	}
	t := &table{head: []string{"DOMAIN", "SELECTOR", "KEY", "CREATED (" + g.loc.String() + ")", "STATUS", "STORED"}}
	for _, k := range keys {
		status := "in use"
		if !k.Retired.IsZero() {
			status = "retired"
		}
		stored := "clear"
		if k.Sealed {
			stored = "sealed"
		}
		t.add(k.Domain, k.Selector, string(k.Algorithm), k.Created.In(g.loc).Format("2006-01-02 15:04"), status, stored)
	}
	t.write(e.stdout)
	return nil
}

func runDomainDNS(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("domain dns", &g)
	sending := fs.String("sending-domain", e.getenv("RELAYD_SENDING_DOMAIN"), "the dedicated sending domain (env RELAYD_SENDING_DOMAIN)")
	ip := fs.String("ip", "", "the public IPv4 address mail leaves from, for SPF")
	mx := fs.String("mx", "", "the host that receives bounces for the sending domain (default: the sending domain)")
	report := fs.String("dmarc-report", "", "where DMARC aggregate reports go (default dmarc@SENDING-DOMAIN)")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	if *sending == "" {
		return usagef("domain dns: --sending-domain is required (e.g. envios.servir.gob.pe)")
	}
	sd, err := dkimkey.CheckDomain(*sending)
	if err != nil {
		return usagef("--sending-domain: %v", err)
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	keys, err := dkimkey.List(ctx, db)
	if err != nil {
		return err
	}
	spf := "v=spf1 -all"
	if *ip != "" {
		spf = "v=spf1 ip4:" + *ip + " -all"
	}
	if *mx == "" {
		*mx = sd
	}
	if *report == "" {
		*report = "dmarc@" + sd
	}
	w := e.stdout
	fmt.Fprintf(w, "; DNS records for envios. Publish each in its zone, then check with dig.\n")
	fmt.Fprintf(w, "\n; The dedicated sending domain %s: envelope senders, bounces, unsubscribe links.\n", sd)
	fmt.Fprintf(w, "%s. IN MX 10 %s.\n", sd, strings.TrimSuffix(*mx, "."))
	fmt.Fprintf(w, "%s. IN TXT %s\n", sd, quoteTXT(spf))
	if *ip == "" {
		fmt.Fprintln(w, "; SPF above authorises nobody: give --ip with the address mail leaves from (or your smarthost's include:).")
	}
	fmt.Fprintf(w, "_dmarc.%s. IN TXT %s\n", sd, quoteTXT("v=DMARC1; p=quarantine; rua=mailto:"+*report))
	byDomain := map[string]bool{}
	for _, k := range keys {
		if !k.Retired.IsZero() {
			continue
		}
		if !byDomain[k.Domain] {
			byDomain[k.Domain] = true
			fmt.Fprintf(w, "\n; DKIM for mail From @%s (aligned with DMARC for %s).\n", k.Domain, k.Domain)
		}
		name, value := k.Record()
		fmt.Fprintf(w, "%s. IN TXT %s\n", name, quoteTXT(value))
	}
	if len(byDomain) == 0 {
		fmt.Fprintln(w, "\n; No DKIM keys yet: relayd domain add servir.gob.pe")
	}
	return nil
}

// quoteTXT splits a TXT value into quoted strings of at most 255 bytes.
func quoteTXT(v string) string {
	var parts []string
	for len(v) > 255 {
		parts = append(parts, `"`+v[:255]+`"`)
		v = v[255:]
	}
	parts = append(parts, `"`+v+`"`)
	return strings.Join(parts, " ")
}

func runDomainCheck(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("domain check", &g)
	sending := fs.String("sending-domain", e.getenv("RELAYD_SENDING_DOMAIN"), "also check the dedicated sending domain's MX, SPF and DMARC")
	dnsServer := fs.String("dns-server", "", "ask this DNS server (host:port) instead of the system's")
	pos, db, _, err := e.parseAndOpen(ctx, fs, &g, args, 1, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	domain, err := dkimkey.CheckDomain(pos[0])
	if err != nil {
		return err
	}
	var r interface {
		LookupTXT(context.Context, string) ([]string, error)
		LookupMX(context.Context, string) ([]*net.MX, error)
	} = net.DefaultResolver
	if *dnsServer != "" {
		r = mailing.NewResolver(*dnsServer)
	}
	keys, err := dkimkey.List(ctx, db)
	if err != nil {
		return err
	}
	problems := 0
	report := func(ok bool, format string, args ...any) {
		mark := "ok     "
		if !ok {
			mark = "PROBLEM"
			problems++
		}
		fmt.Fprintf(e.stdout, "%s  %s\n", mark, fmt.Sprintf(format, args...))
	}
	found := false
	for _, k := range keys {
		if k.Domain != domain || !k.Retired.IsZero() {
			continue
		}
		found = true
		name, want := k.Record()
		txts, err := r.LookupTXT(ctx, name)
		switch {
		case err != nil:
			report(false, "DKIM %s: no TXT record at %s (%v); publish: %s", k.Selector, name, shortDNSError(err), want)
		case !slices.Contains(txts, want):
			report(false, "DKIM %s: %s does not hold this key; publish: %s", k.Selector, name, want)
		default:
			report(true, "DKIM %s published at %s", k.Selector, name)
		}
	}
	if !found {
		report(false, "no DKIM key for %s in the database (relayd domain add %s)", domain, domain)
	}
	if *sending != "" {
		sd, err := dkimkey.CheckDomain(*sending)
		if err != nil {
			return usagef("--sending-domain: %v", err)
		}
		mxs, err := r.LookupMX(ctx, sd)
		report(err == nil && len(mxs) > 0 && mxs[0].Host != ".", "MX for %s (bounces come back here)%s", sd, dnsNote(err))
		txts, err := r.LookupTXT(ctx, sd)
		spf := ""
		for _, t := range txts {
			if strings.HasPrefix(t, "v=spf1") {
				spf = t
			}
		}
		report(spf != "", "SPF for %s: %s%s", sd, orNone(spf), dnsNote(err))
		txts, err = r.LookupTXT(ctx, "_dmarc."+sd)
		dmarc := ""
		for _, t := range txts {
			if strings.HasPrefix(t, "v=DMARC1") {
				dmarc = t
			}
		}
		report(dmarc != "", "DMARC for %s: %s%s", sd, orNone(dmarc), dnsNote(err))
	}
	if problems > 0 {
		fmt.Fprintf(e.stderr, "relayd: %d DNS %s to fix for %s\n", problems, plural(problems, "problem", "problems"), domain)
		return errProblems
	}
	return nil
}

func shortDNSError(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		if de.IsNotFound {
			return "not found"
		}
		return de.Err
	}
	return err.Error()
}

func dnsNote(err error) string {
	if err == nil {
		return ""
	}
	return " (" + shortDNSError(err) + ")"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func runDomainRetire(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("domain retire", &g)
	pos, db, _, err := e.parseAndOpen(ctx, fs, &g, args, 2, 2)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := dkimkey.Retire(ctx, db, pos[0], pos[1], e.now()); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "DKIM key %s of %s retired: it signs nothing more; remove its DNS record once mail signed with it has been delivered\n", pos[1], pos[0])
	return nil
}

// dkimKeyFileFlag is the --dkim-key-file flag of the commands that add,
// seal or use DKIM private keys.
func dkimKeyFileFlag(fs *flag.FlagSet, e *env) *string {
	return fs.String("dkim-key-file", e.getenv("RELAYD_DKIM_KEY_FILE"),
		"key file that seals DKIM private keys in the database (relayd domain keyfile; env RELAYD_DKIM_KEY_FILE)")
}

// openSealed opens the key file at path (none: "", values in clear), then
// the migrated database; the caller closes db.
func (e *env) openSealed(ctx context.Context, g *globals, path string) (*bun.DB, *dkimkey.Sealer, error) {
	var sealer *dkimkey.Sealer
	if path != "" {
		var err error
		if sealer, err = dkimkey.OpenKeyFile(path); err != nil {
			return nil, nil, err
		}
	}
	db, _, err := e.openMigrated(ctx, g)
	if err != nil {
		return nil, nil, err
	}
	return db, sealer, nil
}

func runDomainKeyfile(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("domain keyfile", &g)
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	if err := dkimkey.GenerateKeyFile(pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote a new DKIM key file %s (mode 600). Keep a copy apart from the database backups: the keys sealed with it cannot sign without it.\n"+
		"Use it with --dkim-key-file (or RELAYD_DKIM_KEY_FILE) on relayd serve, domain add and domain rotate; relayd domain seal seals what is stored in clear.\n", pos[0])
	return nil
}

func runDomainSeal(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("domain seal", &g)
	keyFile := dkimKeyFileFlag(fs, e)
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	if *keyFile == "" {
		return usagef("domain seal: --dkim-key-file (or RELAYD_DKIM_KEY_FILE) is required")
	}
	db, sealer, err := e.openSealed(ctx, &g, *keyFile)
	if err != nil {
		return err
	}
	defer db.Close()
	var n int
	err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		n, err = dkimkey.Seal(ctx, tx, sealer)
		return err
	})
	if err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(e.stdout, "sealed 0 values stored in clear (DKIM private keys, token secrets)")
		return nil
	}
	if err := dkimkey.Scrub(ctx, db); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "sealed %d %s stored in clear (DKIM private keys, token secrets). Backups taken before still hold them in clear: "+
		"rotate the DKIM keys (relayd domain rotate DOMAIN --dkim-key-file PATH) and retire the old ones.\n", n, plural(n, "value", "values"))
	return nil
}
