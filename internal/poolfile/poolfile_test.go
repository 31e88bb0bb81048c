package poolfile_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/poolfile"
)

func TestServirExample(t *testing.T) {
	f, err := os.Open("../../examples/servir/pool.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := poolfile.Parse(f, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	origins := map[string]int{}
	for _, a := range p.Accounts {
		sum += a.Allocation
		origins[a.Origin]++
	}
	lima, _ := time.LoadLocation("America/Lima")
	if p.Pool.Name != "servir-2026" || p.Pool.Total != 8_306_727 || sum != 8_306_727 || len(p.Accounts) != 10 {
		t.Fatalf("plan: %s total %d, %d accounts allocated %d", p.Pool.Name, p.Pool.Total, len(p.Accounts), sum)
	}
	if origins["platform"] != 6 || origins["system"] != 4 {
		t.Fatalf("origins = %v", origins)
	}
	if want := time.Date(2026, 11, 1, 0, 0, 0, 0, lima); !p.Pool.StartsAt.Equal(want) || !p.Pool.EndsAt.Equal(want.AddDate(0, 0, 365)) {
		t.Fatalf("period %v – %v", p.Pool.StartsAt, p.Pool.EndsAt)
	}
}

const valid = `pool:
  name: p
  total: 100
  starts: 2026-01-01
  days: 10
accounts:
  - name: a/b
    origin: platform
    allocation: 60
`

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "pool file is empty"},
		{"unknown pool key", strings.Replace(valid, "total:", "totl:", 1), `line 3: unknown key "totl"`},
		{"unknown account key", strings.Replace(valid, "allocation:", "allocaton:", 1), `line 9: unknown key "allocaton"`},
		{"unknown top key", valid + "extra: 1\n", `line 10: unknown key "extra"`},
		{"missing total", strings.Replace(valid, "  total: 100\n", "", 1), "missing pool.total"},
		{"missing starts", strings.Replace(valid, "  starts: 2026-01-01\n", "", 1), "missing pool.starts"},
		{"missing days", strings.Replace(valid, "  days: 10\n", "", 1), "missing pool.days or pool.ends"},
		{"days and ends", strings.Replace(valid, "  days: 10\n", "  days: 10\n  ends: 2026-02-01\n", 1), "days or ends, not both"},
		{"bad date", strings.Replace(valid, "2026-01-01", "01/01/2026", 1), `pool.starts: "01/01/2026" is not a date`},
		{"bad zone", strings.Replace(valid, "  days: 10\n", "  days: 10\n  timezone: Mars/Olympus\n", 1), "unknown time zone"},
		{"zero days", strings.Replace(valid, "days: 10", "days: 0", 1), "pool.days: must be between"},
		{"text total", strings.Replace(valid, "total: 100", "total: lots", 1), "cannot unmarshal"},
		{"negative total", strings.Replace(valid, "total: 100", "total: -100", 1), "positive"},
		{"over-allocated", strings.Replace(valid, "allocation: 60", "allocation: 101", 1), "allocated 101 messages, the pool has 100"},
		{"bad account name", strings.Replace(valid, "a/b", "ab", 1), "AREA/NAME"},
		{"missing allocation", strings.Replace(valid, "    allocation: 60\n", "", 1), "missing allocation"},
		{"missing origin", strings.Replace(valid, "    origin: platform\n", "", 1), "missing origin"},
		{"bad origin", strings.Replace(valid, "origin: platform", "origin: robot", 1), "platform or system"},
		{"two documents", valid + "---\npool: {}\n", "more than one YAML document"},
		{"not a map", "- 1\n- 2\n", "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := poolfile.Parse(strings.NewReader(tt.in), time.UTC)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

func TestEndsIsInclusive(t *testing.T) {
	in := strings.Replace(valid, "days: 10", "ends: 2026-01-10", 1)
	p, err := poolfile.Parse(strings.NewReader(in), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 1, 11, 0, 0, 0, 0, time.UTC); !p.Pool.EndsAt.Equal(want) {
		t.Fatalf("ends %v, want %v", p.Pool.EndsAt, want)
	}
}

// FuzzParse: any input either parses into a plan that validates, or is
// refused with a one-line error; it never panics.
func FuzzParse(f *testing.F) {
	f.Add(valid)
	if b, err := os.ReadFile("../../examples/servir/pool.yaml"); err == nil {
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := poolfile.Parse(strings.NewReader(in), time.UTC)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("parsed plan does not validate: %v", err)
		}
		if len(p.Accounts) > 0 && p.Pool.Total <= 0 {
			t.Fatalf("plan with accounts but total %d", p.Pool.Total)
		}
	})
}
