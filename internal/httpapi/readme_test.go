package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/internal/tlscert"
)

// readmeCurl is one curl command of a README code block.
type readmeCurl struct {
	line int    // where it starts in the README
	text string // its bytes, backslash-newline continuations included
	url  *url.URL
}

// readmeCurls returns every command of the fenced code blocks of the
// Markdown file at path whose first word is curl.
func readmeCurls(t *testing.T, path string) []readmeCurl {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		cmds    []readmeCurl
		inBlock bool
		cur     *readmeCurl // a command continued on the next line
		n       int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := sc.Text()
		if fence := strings.TrimSpace(line); strings.HasPrefix(fence, "```") || strings.HasPrefix(fence, "~~~") {
			inBlock, cur = !inBlock, nil
			continue
		}
		if !inBlock {
			continue
		}
		if cur == nil {
			word, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			if word != "curl" {
				continue
			}
			cmds = append(cmds, readmeCurl{line: n, text: strings.TrimLeft(line, " \t")})
			cur = &cmds[len(cmds)-1]
		} else {
			cur.text += "\n" + line
		}
		if !strings.HasSuffix(line, `\`) {
			cur = nil
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	urlRE := regexp.MustCompile(`https?://[^\s'"]+`)
	for i := range cmds {
		c := &cmds[i]
		us := urlRE.FindAllString(c.text, -1)
		if len(us) != 1 {
			t.Fatalf("README.md:%d: want one URL in the curl command, found %q", c.line, us)
		}
		if c.url, err = url.Parse(us[0]); err != nil || c.url.Scheme != "https" {
			t.Fatalf("README.md:%d: %q: want an https URL (err %v)", c.line, us[0], err)
		}
	}
	return cmds
}

// TestREADMECurl runs the README's curl commands as written, with the real
// curl, against the API over HTTPS on loopback, in a directory holding the
// data/relayd-cert.pem relayd generates (the README's --cacert). What
// cannot be literal is supplied around the command: $TOKEN in its
// environment (an sjti/talento token), and the URL's host and port mapped
// to the test server with --connect-to; the file the import example
// uploads is in the directory. Each must answer 2xx; a POST /v1/messages
// must have stored its message.
func TestREADMECurl(t *testing.T) {
	requireCurl(t)
	cmds := readmeCurls(t, "../../README.md")
	posts := 0
	varRE := regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)
	for _, c := range cmds {
		if c.url.Path == "/v1/messages" {
			posts++
		}
		for _, m := range varRE.FindAllStringSubmatch(c.text, -1) {
			if m[1] != "TOKEN" {
				t.Fatalf("README.md:%d: the curl command uses $%s; this test provides only $TOKEN", c.line, m[1])
			}
		}
	}
	if posts == 0 { // not a vacuous pass
		t.Fatalf("README.md: found %d curl commands, none to /v1/messages: want the API's examples", len(cmds))
	}
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFullFixture(t, db)
		dir := t.TempDir()
		// The file the README's import uploads: two contacts and a reject.
		csv := "Correo,Nombre,region\nana@example.org,Ana,Lima\nluis@example.org,Luis,Cusco\nno-es-correo,X,Piura\n"
		if err := os.WriteFile(filepath.Join(dir, "participantes.csv"), []byte(csv), 0o600); err != nil {
			t.Fatal(err)
		}
		ran := make(chan error, 1) // Run stores a started campaign's recipients, as relayd serve does
		go func() { ran <- f.campaigns.Run(t.Context()) }()
		t.Cleanup(func() { <-ran }) // t.Context ends before the cleanups
		addr := serveReadmeTLS(t, f.srv.Config.Handler, filepath.Join(dir, "data"), cmds[0].url.Hostname())
		hosts := map[string]bool{}
		var connectTo []string
		for _, c := range cmds {
			if h := c.url.Hostname(); !hosts[h] {
				hosts[h] = true
				connectTo = append(connectTo, "--connect-to '"+h+"::"+addr+"'")
			}
		}
		// -q first: no ~/.curlrc; the status on the last line of stdout.
		prefix := "curl -q -sS " + strings.Join(connectTo, " ") + ` -w '\n%{http_code}'`
		for _, c := range cmds {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, "sh", "-c", prefix+strings.TrimPrefix(c.text, "curl"))
			cmd.Dir = dir
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TOKEN=" + f.talento}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			cancel()
			body, status, _ := cutLast(string(out), "\n")
			if err != nil || len(status) != 3 || status[0] != '2' {
				t.Errorf("README.md:%d: %s\nstatus %q, err %v, stderr %q\nbody %s", c.line, c.text, status, err, stderr.String(), body)
				continue
			}
			if c.url.Path != "/v1/messages" {
				continue
			}
			var r struct{ ID string }
			if err := json.Unmarshal([]byte(body), &r); err != nil || r.ID == "" {
				t.Errorf("README.md:%d: the answer has no message id (%v): %s", c.line, err, body)
				continue
			}
			if m, err := f.m.Message(context.Background(), "sjti/talento", r.ID); err != nil || m.Recipients == 0 {
				t.Errorf("README.md:%d: message %s not stored: %+v %v", c.line, r.ID, m, err)
			}
		}
	})
}

// serveReadmeTLS serves h over HTTPS on 127.0.0.1:0 with the self-signed
// certificate relayd generates for hostname in its data directory dir,
// until the test ends, and returns the address.
func serveReadmeTLS(t *testing.T, h http.Handler, dir, hostname string) string {
	t.Helper()
	certFile, keyFile, _, err := tlscert.SelfSigned(dir, hostname)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := tlscert.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, TLSConfig: holder.Config(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- hs.ServeTLS(l, "", "") }()
	t.Cleanup(func() {
		hs.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return l.Addr().String()
}

// requireCurl skips the test when curl is not installed, except in CI
// (ENVIOS_TEST_CLIENTS=required), where that fails.
func requireCurl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("ENVIOS_TEST_CLIENTS") == "required" {
			t.Fatal("curl is required (ENVIOS_TEST_CLIENTS=required) but not installed")
		}
		t.Skip("curl not installed (.ci/run installs it)")
	}
}

// cutLast is strings.Cut at the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return "", s, false
}

// A body sent as something other than JSON (curl -d's default type) is
// refused saying what to send; any spelling of application/json is JSON.
func TestContentType(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)
		for _, c := range []struct {
			contentType string
			status      int
		}{
			{"application/x-www-form-urlencoded", 415},
			{"text/plain; charset=utf-8", 415},
			{"application/jsonx", 415},
			{"application/json", 202},
			{"Application/JSON; charset=utf-8", 202},
		} {
			st, out := f.call(t, "POST", "/v1/messages", f.talento, msg("ana@example.org"), "Content-Type", c.contentType)
			if st != c.status {
				t.Errorf("Content-Type %q: %d %v, want %d", c.contentType, st, out, c.status)
				continue
			}
			if st != 415 {
				continue
			}
			e, _ := out["error"].(map[string]any)
			if m, _ := e["message"].(string); code(out) != "unsupported_media_type" || !strings.Contains(m, "-H 'Content-Type: application/json'") {
				t.Errorf("Content-Type %q: %v, want unsupported_media_type saying to send -H 'Content-Type: application/json'", c.contentType, out)
			}
		}
	})
}
