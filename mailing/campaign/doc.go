// Package campaign keeps an account's stored templates and campaigns and
// sends them: the Go API of what the CLI (relayd campaign, relayd
// template), the HTTPS API and the console do.
//
// A campaign is content (subject, text and HTML templates, copied from a
// stored template when it names one, so the record stays what was sent),
// a From identity, a target — lists and/or a segment of the account's
// contacts — a topic (the scope of its unsubscribe links), a send-at time
// and tags. Its life:
//
//	draft ──Start──▶ scheduled ──(send-at)──▶ running ──(all final)──▶ finished
//	                     ▲ │                    ▲ │
//	                     │ └──Pause──▶ paused ◀─┘ │      any but finished ──Cancel──▶ cancelled
//	                     └────Resume───┘  ─Resume─┘
//
// Start runs a preflight (recipients, those the suppression list skips,
// the pool cost against what the account has left: refused whole if it
// does not fit), then snapshots the recipients — the active contacts
// matching the target at that moment, numbered (campaign_targets) — and
// materialises them through mailing's SendBatch with the idempotency key
// "campaign:ID". Materialisation is resumable: the snapshot fixes each
// contact's seq, and SendBatch stores a seq once, so every contact gets
// exactly one recipient row and one charge across restarts, kill -9,
// pause/resume and several nodes (a lock held for the life of the process
// — store.TryLock — keeps two nodes from materialising one campaign at
// once; [Store.Run], which relayd serve runs, takes over a campaign whose
// materialiser died). Contacts added to the lists after the start are not
// included unless [Store.Extend] is asked.
//
// Pause holds the campaign's message (the delivery engines claim none of
// its recipients) and stops materialising; Resume continues both; Cancel
// cancels the recipients never sent and releases the charge of those never
// attempted. Campaigns and templates are kept permanently: nothing here
// deletes them.
package campaign
