package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
)

// campaignTranscript is a platform user's session with templates,
// segments and a campaign, and the mistakes they make, on each engine,
// compared with testdata/campaign.golden.
var campaignTranscript = []string{
	`db migrate`,
	`quota init --from ../../examples/servir/pool.yaml`,
	`sender add enap/eventos @servir.gob.pe`,
	`list create boletin --account enap/eventos`,
	`contacts import $TMP/participantes.csv --account enap/eventos --list boletin`,
	`template save boletin --account enap/eventos --subject "Hola {{.name}}" --html-file $TMP/boletin.html`,
	`template save roto --account enap/eventos --subject "Hola {{.name" --text-file $TMP/boletin.html`,
	`template save comun --shared --subject "Aviso" --text-file $TMP/aviso.txt`,
	`template ls --account enap/eventos`,
	`template show boletin --account enap/eventos`,
	`segment save lima --account enap/eventos --expr 'Región = "lima" and list "boletin"'`,
	`segment save mal --account enap/eventos --expr 'Región = '`,
	`segment count 'Región in ("Lima", "Cusco")' --account enap/eventos`,
	`campaign create --account enap/eventos --name "Boletín diciembre" --from eventos@servir.gob.pe --template boletin --lists boletin --send-at "2026-12-10 09:00"`,
	`domain add servir.gob.pe --key ed25519`,
	`campaign create --account enap/eventos --name "Boletín diciembre" --from eventos@servir.gob.pe --template boletin --lists boletin --send-at "2026-12-10 09:00"`,
	`campaign create --account enap/eventos --name "Solo Lima" --from eventos@servir.gob.pe --template comun --segment lima`,
	`campaign create --account enap/eventos --name x --from eventos@servir.gob.pe --subject "{{.cargo}}" --text-file $TMP/aviso.txt --lists boletin`,
	`campaign create --account enap/eventos --name x --from otro@example.org --template boletin --lists boletin`,
	`campaign create --account enap/eventos --name x --from eventos@servir.gob.pe --template boletin`,
	`campaign create --account enap/eventos --name x --from eventos@servir.gob.pe --template boletin --lists boletin --send-at mañana`,
	`campaign list --account enap/eventos`,
	`campaign create --account enap/eventos --name "Más que el pool" --from eventos@servir.gob.pe --template comun --lists boletin`,
	`campaign preview 1 --as luis@example.org`,
	`campaign preview 1 --as nadie@example.org`,
	`campaign start 1 --dry-run`,
	`campaign start 1`,
	`campaign start 1`,
	`campaign show 1`,
	`campaign pause 1`,
	`campaign show 1`,
	`campaign resume 1`,
	`campaign recipients 1 --limit 2`,
	`campaign cancel 1`,
	`campaign cancel 1`,
	`campaign clone 1 --name "Boletín enero"`,
	`campaign show 3 --account sjti/talento`,
	`campaign show uno`,
	`quota transfer enap/eventos enap/biblioteca 1,999,999 --reason "prueba de campaña"`,
	`campaign start 3 --dry-run`,
	`campaign start 3`,
	`campaign show 3`,
	`quota show`,
}

var campaignFiles = map[string]string{
	"participantes.csv": "correo,nombre,Región\nana@example.org,Ana,Lima\nluis@example.org,Luis,Cusco\neva@example.org,Eva,Lima\n",
	"boletin.html":      "<p>Novedades para {{.Región}}.</p>\n",
	"aviso.txt":         "Aviso general.\n",
}

// publicKey is a generated DKIM public key in a printed record.
var publicKey = regexp.MustCompile(`p=[A-Za-z0-9+/=]{20,}`)

func TestCampaignTranscript(t *testing.T) {
	for _, eng := range storetest.Engines {
		t.Run(string(eng), func(t *testing.T) {
			dsn := storetest.DSN(t, eng)
			tmp := t.TempDir()
			for name, body := range campaignFiles {
				if err := os.WriteFile(filepath.Join(tmp, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			for _, line := range campaignTranscript {
				fmt.Fprintf(&out, "$ relayd %s\n", line)
				code, stdout, stderr := runLine(t, dsn, strings.ReplaceAll(line, "$TMP", tmp))
				got := publicKey.ReplaceAllString(strings.ReplaceAll(stdout+stderr, tmp, "$TMP"), "p=PUBLIC-KEY")
				out.WriteString(got)
				if code != 0 {
					fmt.Fprintf(&out, "[exit %d]\n", code)
				}
				out.WriteString("\n")
			}
			golden(t, "campaign.golden", out.String(), eng == store.SQLite)
		})
	}
}
