// Package poolfile reads a pool plan — a message pool and its accounts —
// from YAML, strictly: unknown keys, missing fields, bad dates and
// allocations beyond the pool are errors naming the line or field.
//
//	pool:
//	  name: servir-2026
//	  total: 8306727
//	  starts: 2026-11-01      # first day, in timezone
//	  days: 365               # or ends: 2027-10-31 (last day, inclusive)
//	  timezone: America/Lima  # optional; default: the caller's
//	accounts:
//	  - name: enap/eventos
//	    origin: platform      # platform | system
//	    allocation: 2000000
//	    description: Event invitations
package poolfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/servir-pe/envios/quota"
)

type document struct {
	Pool struct {
		Name     string `yaml:"name"`
		Total    *int64 `yaml:"total"`
		Starts   string `yaml:"starts"`
		Days     *int   `yaml:"days"`
		Ends     string `yaml:"ends"`
		Timezone string `yaml:"timezone"`
	} `yaml:"pool"`
	Accounts []struct {
		Name        string `yaml:"name"`
		Origin      string `yaml:"origin"`
		Allocation  *int64 `yaml:"allocation"`
		Description string `yaml:"description"`
	} `yaml:"accounts"`
}

// MaxSize bounds the input; a pool file is a few kilobytes.
const MaxSize = 1 << 20

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)

// Parse reads a plan. Dates are calendar days in the file's timezone, or
// in loc when the file names none.
func Parse(r io.Reader, loc *time.Location) (quota.Plan, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return quota.Plan{}, err
	}
	if len(data) > MaxSize {
		return quota.Plan{}, fmt.Errorf("pool file larger than %d bytes", MaxSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var doc document
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return quota.Plan{}, errors.New("pool file is empty")
		}
		return quota.Plan{}, cleanYAMLError(err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return quota.Plan{}, errors.New("pool file holds more than one YAML document")
	}
	return doc.plan(loc)
}

func cleanYAMLError(err error) error {
	msg := err.Error()
	if m := unknownField.FindAllStringSubmatch(msg, -1); m != nil {
		var parts []string
		for _, x := range m {
			parts = append(parts, fmt.Sprintf("line %s: unknown key %q", x[1], x[2]))
		}
		return errors.New(strings.Join(parts, "; "))
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
	msg = strings.ReplaceAll(msg, "\n  ", "; ")
	return errors.New(strings.Join(strings.Fields(msg), " "))
}

func (d *document) plan(defaultLoc *time.Location) (quota.Plan, error) {
	p := d.Pool
	var missing []string
	if p.Name == "" {
		missing = append(missing, "pool.name")
	}
	if p.Total == nil {
		missing = append(missing, "pool.total")
	}
	if p.Starts == "" {
		missing = append(missing, "pool.starts")
	}
	if len(missing) > 0 {
		return quota.Plan{}, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	loc := defaultLoc
	if loc == nil {
		loc = time.UTC
	}
	if p.Timezone != "" {
		l, err := time.LoadLocation(p.Timezone)
		if err != nil {
			return quota.Plan{}, fmt.Errorf("pool.timezone: unknown time zone %q", p.Timezone)
		}
		loc = l
	}
	start, err := time.ParseInLocation(time.DateOnly, p.Starts, loc)
	if err != nil {
		return quota.Plan{}, fmt.Errorf("pool.starts: %q is not a date like 2026-11-01", p.Starts)
	}
	var end time.Time
	switch {
	case p.Days != nil && p.Ends != "":
		return quota.Plan{}, errors.New("pool: give days or ends, not both")
	case p.Days != nil:
		if *p.Days < 1 || *p.Days > 3660 {
			return quota.Plan{}, fmt.Errorf("pool.days: must be between 1 and 3660, got %d", *p.Days)
		}
		end = start.AddDate(0, 0, *p.Days)
	case p.Ends != "":
		last, err := time.ParseInLocation(time.DateOnly, p.Ends, loc)
		if err != nil {
			return quota.Plan{}, fmt.Errorf("pool.ends: %q is not a date like 2027-10-31", p.Ends)
		}
		end = last.AddDate(0, 0, 1) // ends is the last day, inclusive
	default:
		return quota.Plan{}, errors.New("missing pool.days or pool.ends")
	}
	plan := quota.Plan{Pool: quota.PoolSpec{Name: p.Name, Total: *p.Total, StartsAt: start, EndsAt: end}}
	for i, a := range d.Accounts {
		if a.Name == "" {
			return quota.Plan{}, fmt.Errorf("accounts[%d]: missing name", i)
		}
		if a.Allocation == nil {
			return quota.Plan{}, fmt.Errorf("accounts[%d] (%s): missing allocation", i, a.Name)
		}
		if a.Origin == "" {
			return quota.Plan{}, fmt.Errorf("accounts[%d] (%s): missing origin (platform or system)", i, a.Name)
		}
		plan.Accounts = append(plan.Accounts, quota.AccountSpec{Name: a.Name, Origin: a.Origin, Allocation: *a.Allocation, Description: a.Description})
	}
	if err := plan.Validate(); err != nil {
		return quota.Plan{}, err
	}
	return plan, nil
}
