package segment_test

import (
	"fmt"

	"github.com/servir-pe/envios/internal/segment"
)

func ExampleParse() {
	e, err := segment.Parse(`Region = "Lima" AND (cargo contains "director" OR list "boletín") AND NOT domain IN ("gmail.com","hotmail.com")`)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e)
	fmt.Println(e.Attributes(), e.Lists())

	_, err = segment.Parse(`region = and cargo exists`)
	fmt.Println(err)
	// Output:
	// Region = "Lima" and (cargo contains "director" or list "boletín") and not domain in ("gmail.com", "hotmail.com")
	// [Region cargo] [boletín]
	// segment: at 9: expected a value after "=", found "and"
}

// An attribute name is a word of letters, digits and _, or any name
// between backticks; String keeps the backticks only where they are
// needed.
func ExampleParse_attributeNames() {
	e, err := segment.Parse("Región = \"Lima\" AND `Fecha de alta` STARTS \"2026\" AND `name` EXISTS AND `Cargo` = \"jefe\"")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e)
	fmt.Printf("%q\n", e.Attributes())
	// Output:
	// Región = "Lima" and `Fecha de alta` starts "2026" and `name` exists and Cargo = "jefe"
	// ["Cargo" "Fecha de alta" "Región" "name"]
}

func ExampleExpr_SQL() {
	e, err := segment.Parse(`status = "active" and (list "boletín" or created_at >= 2026-12-01)`)
	if err != nil {
		fmt.Println(err)
		return
	}
	lists := map[string]int64{"boletín": 7}
	where, args, err := e.SQL(segment.PostgreSQL, "c", func(name string) (int64, error) {
		id, ok := lists[name]
		if !ok {
			return 0, fmt.Errorf("no list %q", name)
		}
		return id, nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("SELECT c.address FROM contacts AS c WHERE " + where)
	fmt.Println(args)
	// Output:
	// SELECT c.address FROM contacts AS c WHERE (c.status = ? AND (EXISTS (SELECT 1 FROM contact_memberships m WHERE m.contact_id = c.id AND m.list_id = ? AND m.status = 'subscribed') OR c.created_at >= ?))
	// [active 7 2026-12-01 00:00:00 +0000 UTC]
}
