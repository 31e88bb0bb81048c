// Package docs holds envios's narrative documentation; its test keeps docs/flow.md true.
package docs
