package delivery_test

import (
	"github.com/servir-pe/envios/internal/mailingtest"
)

type env = mailingtest.Env

var (
	start  = mailingtest.Start
	setup  = mailingtest.Setup
	verify = mailingtest.Verify
)

var (
	basic       = mailingtest.Basic
	behindProxy = mailingtest.BehindProxy
	sendOne     = mailingtest.SendOne
)

var (
	peakRSS  = mailingtest.PeakRSS
	people   = mailingtest.People
	bumpPool = mailingtest.BumpPool
)
