// Package bounce says what a delivery failure means for the recipient and
// what an inbound message to the bounce address is.
//
// Classify reads one failure, synchronous (the code, enhanced code and text
// of an SMTP reply during delivery) or asynchronous (a DSN's Status and
// Diagnostic-Code), and returns its Class: Hard (the address does not
// exist), Disabled, Transient, Message (this message, never the
// recipient), Policy (our configuration or reputation, never the
// recipient) or Undetermined. Class.Suppresses says which classes may
// lead to suppressing an address; the streak and expiry rules live in
// internal/suppress.
//
// Read reads one raw inbound message and returns a Report: its Kind (a
// DSN, a delay warning, an ARF complaint, a Microsoft JMRP complaint, an
// automatic reply, feedback that needs no action, or unknown), one
// Recipient per recipient group with its Action, Status, Diagnostic-Code
// and Class, the returned message, and the candidate envios tokens found in
// it (b+TOKEN@ envelope senders, u+TOKEN@ and /u/TOKEN unsubscribe links)
// for the caller to verify.
//
// The rules come from RFC 3463 (enhanced status codes: the class comes from
// the subject and detail, see the table on Class), RFC 3464 and RFC 6522
// (multipart/report; report-type=delivery-status), RFC 6533 (internationalized
// delivery status, message/global-delivery-status), RFC 3834 (automatic
// replies), RFC 5965 (ARF feedback reports) with RFC 6430 (not-spam) and RFC
// 6591 (auth-failure), and the deliverability design notes, whose lessons
// from Postal, listmonk and Amazon SES they encode: a 5.7.x policy block is
// never turned into a hard bounce by loose keywords (Postal #60), auto-
// replies are not bounces (listmonk #1334), and every failure keeps its
// class, status and diagnostic.
//
// Parts are found by content type anywhere in the MIME tree, never by
// position: Gmail's human part is a multipart/related, AOL's is text/html
// first, Exchange nests multipart/alternative. About 45% of real bounces
// are not RFC 3464 at all (qmail, Exim, old Gmail, Yahoo, Exchange 2003,
// sendmail, Postfix without DSN); they are read by a table of the sentences
// each MTA writes, then by a generic fallback for bounce-looking messages.
// The reader tolerates raw 8-bit text, CRLF, LF or CR-only line ends,
// unindented continuation lines, an empty status part, a missing recipient
// group, a status in a text/plain part, base64 or quoted-printable parts,
// and truncated messages; it never panics (FuzzRead).
//
// It does not use enmime's dsn package: that package reads the report's
// parts by position and returned empty reports for all 31 Gmail and
// Workspace DSNs of the Sisimai corpus, and for AOL's and ARF reports. Nor
// does it use mime/multipart, which gives up at the first malformed part;
// the MIME walk here is small and keeps whatever it could read.
package bounce
