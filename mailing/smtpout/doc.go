// Package smtpout hands messages to the next hop over SMTP: [Smarthost]
// (everything to one relay, as Postfix's relayhost: STARTTLS required
// unless allowed otherwise, AUTH PLAIN only over TLS, idle connections
// reused and checked with RSET) and [DirectMX] (each domain's MX hosts in
// preference order, RFC 5321 §5, with its address as the implicit MX, a
// null MX (RFC 7505) and NXDOMAIN permanent, DNS failures temporary, and
// opportunistic STARTTLS verified when it can be). Both pipeline MAIL,
// RCPT and DATA when the server offers PIPELINING (RFC 2920).
//
// Before delivering, the delivery engine asks either for the [Route] of a
// recipient domain, what it keys its per-destination limits on: the
// smarthost, or the domain's MX group ([MXGroup]: the registrable domain
// of its best MX hosts, so every domain Google or Microsoft hosts shares
// one). DirectMX remembers each lookup for MXCacheTTL (5 minutes), for the
// route and the delivery that follows alike.
//
// A [Transport] returns one [Result] per recipient: a refused RCPT keeps
// its own reply, the recipients RCPT accepted share the reply to DATA, and
// a connection lost after the message was sent is marked LostAfterData (a
// possible duplicate). Partial success is normal.
package smtpout
