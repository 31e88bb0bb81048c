package report_test

import (
	"context"
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/report"
)

func TestParseCursor(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want report.Cursor
		ok   bool
	}{
		{"", report.Cursor{}, true},
		{"3.7", report.Cursor{Recipient: 3, Event: 7}, true},
		{"3.7.2", report.Cursor{Recipient: 3, Event: 7, Audit: 2}, true},
		{"3", report.Cursor{}, false},
		{"3.7.2.1", report.Cursor{}, false},
		{"a.b", report.Cursor{}, false},
		{"-1.2", report.Cursor{}, false},
		{"1..2", report.Cursor{}, false},
	} {
		got, err := report.ParseCursor(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseCursor(%q) = %+v, %v", tt.in, got, err)
		}
		if tt.ok && tt.in != "" && got.String() != tt.in {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), tt.in)
		}
	}
}

// The stream carries the suppression list's changes (for every account's
// stream only), in order, resumable from the R.E.A cursor.
func TestEventsCarrySuppressionChanges(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := setup(t, db, 100)
		ctx := context.Background()
		now := f.clock.Now()
		if _, _, err := suppress.Insert(ctx, db, suppress.Add{Address: "ana@example.com", Scope: suppress.ScopeAll,
			Reason: suppress.ReasonManual, Actor: "cli:test", Evidence: map[string]string{"why": "pidió"}, Now: now}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.m.Send(ctx, mailing.Message{Account: "sjti/talento", From: "avisos@servir.gob.pe", To: []string{"luis@example.com"},
			Subject: "s", Text: "t"}); err != nil {
			t.Fatal(err)
		}
		if _, err := suppress.Remove(ctx, db, "ana@example.com", 0, "cli:test", "error de digitación", now); err != nil {
			t.Fatal(err)
		}
		evs, cur, err := f.rep.Events(ctx, report.EventsFilter{Lag: -1})
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, ev := range evs {
			types = append(types, ev.Type+" "+ev.Address)
		}
		want := "[accepted luis@example.com suppression.added ana@example.com suppression.removed ana@example.com]"
		if got := "[" + strings.Join(types, " ") + "]"; got != want || cur.Audit == 0 || evs[1].Detail["actor"] != "cli:test" || evs[2].ID != cur.String() {
			t.Fatalf("events %s (cursor %s), want %s", got, cur, want)
		}
		after, err := report.ParseCursor(evs[1].ID)
		if err != nil {
			t.Fatal(err)
		}
		rest, _, err := f.rep.Events(ctx, report.EventsFilter{After: after, Lag: -1})
		if err != nil || len(rest) != 1 || rest[0].Type != "suppression.removed" {
			t.Fatalf("resumed after %s: %+v %v", evs[1].ID, rest, err)
		}
		mine, _, err := f.rep.Events(ctx, report.EventsFilter{Account: "sjti/talento", Lag: -1})
		if err != nil || len(mine) != 1 || mine[0].Type != "accepted" {
			t.Fatalf("an account's stream: %+v %v", mine, err)
		}
	})
}
