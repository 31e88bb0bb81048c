package smtpout

import (
	"context"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"
)

// Route is where a recipient domain's mail goes, as a transport knows it
// before delivering: what the delivery engine keys its per-destination
// limits on.
type Route struct {
	// Key names the destination whose limits the mail shares: the
	// smarthost's address, or the domain's MX group (see MXGroup).
	Key string
	// Group is the provider group of the recipient domain: its MX group
	// in direct delivery; through a smarthost, which relayd does not look
	// MX hosts up for, the recipient domain itself.
	Group string
	// Smarthost: every domain's mail goes to one relay, named by Key.
	Smarthost bool
}

// Route names the smarthost: every domain's mail shares its limits.
func (s *Smarthost) Route(_ context.Context, domain string) Route {
	return Route{Key: s.Addr, Group: strings.ToLower(domain), Smarthost: true}
}

// Route resolves the domain's MX hosts (remembered for MXCacheTTL, so the
// Deliver that follows does not look them up again) and names their group.
// A domain whose lookup fails is a group of its own.
func (x *DirectMX) Route(ctx context.Context, domain string) Route {
	domain = strings.ToLower(domain)
	m := x.lookup(ctx, domain)
	if m.group == "" {
		return Route{Key: domain, Group: domain}
	}
	return Route{Key: m.group, Group: m.group}
}

// MXGroup is the group of the servers a domain's mail goes to: the
// registrable domains (public suffix plus one label,
// golang.org/x/net/publicsuffix) of its most preferred MX hosts, sorted,
// without repeats, joined by ",". The many domains one provider hosts
// share a group whatever their own names and however the provider names
// each one's MX: gmail.com (gmail-smtp-in.l.google.com) and every Google
// Workspace domain (aspmx.l.google.com, smtp.google.com) are "google.com";
// hotmail.com, outlook.com and every Microsoft 365 tenant
// (TENANT.mail.protection.outlook.com) are "outlook.com"; Yahoo's are
// "yahoodns.net". The sorted set of MX host names would split them:
// Google names Workspace's MX hosts apart from gmail.com's, and Microsoft
// gives each tenant its own. Backup MX hosts (a worse preference) do not
// count: mail goes to the best ones.
func MXGroup(best []string) string {
	var regs []string
	for _, h := range best {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if h == "" {
			continue
		}
		reg, err := publicsuffix.EffectiveTLDPlusOne(h)
		if err != nil {
			reg = h // a public suffix itself, or an address: the name as it is
		}
		regs = append(regs, reg)
	}
	slices.Sort(regs)
	return strings.Join(slices.Compact(regs), ",")
}

// mxEntry is what a lookup found about a domain.
type mxEntry struct {
	hosts []string // in preference order
	group string   // MXGroup of the best hosts; "" when the lookup failed
	fail  *Result  // the failure to record instead of delivering
	at    time.Time
}

// lookup is hosts through the cache: answers (the hosts, or a permanent
// failure) are kept for MXCacheTTL; a temporary failure is not kept.
func (x *DirectMX) lookup(ctx context.Context, domain string) mxEntry {
	ttl := x.MXCacheTTL
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	x.mu.Lock()
	m, ok := x.cache[domain]
	x.mu.Unlock()
	if ok && time.Since(m.at) < ttl {
		return m
	}
	hosts, best, fail := x.hosts(ctx, domain)
	m = mxEntry{hosts: hosts, fail: fail, at: time.Now()}
	if fail == nil {
		m.group = MXGroup(hosts[:best])
	}
	if ttl > 0 && (fail == nil || fail.Permanent()) {
		x.mu.Lock()
		if x.cache == nil || len(x.cache) >= 100_000 {
			x.cache = map[string]mxEntry{} // bounded: dropping it costs lookups only
		}
		x.cache[domain] = m
		x.mu.Unlock()
	}
	return m
}
