package httpapi

import (
	_ "embed"
	"net/http"

	"github.com/servir-pe/envios/internal/apitoken"
)

//go:embed openapi.json
var openapiDoc []byte

func (a *API) openapi(w http.ResponseWriter, _ *http.Request, _ apitoken.Token) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openapiDoc)
}
