package cli

import (
	"cmp"
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/watch"
	"github.com/weftmesh/weft/internal/wire"
)

// Controller locates the controller, whose Deployment's flags say how it
// builds the model.
type Controller struct {
	// Namespace and Deployment name the controller's Deployment.
	Namespace, Deployment string
}

// Mesh is the mesh as the controller models it, built by the commands
// from the same objects with the same settings: the model is a pure
// function of them, the same on every replica.
type Mesh struct {
	Input mesh.Input
	Model *mesh.Model
	// Settings says where the model's settings came from (the
	// controller's Deployment, or the defaults when it cannot be read).
	Settings string
}

// LoadMesh lists the objects the model is built from with the operator's
// credentials and builds the model with the controller's settings (its
// Deployment's --mesh-namespace, --trust-domain and --default-inbound).
// It has no last good generations: an object whose current generation
// the controller refuses is left out, where the controller may keep an
// earlier one in force (its status says so).
func LoadMesh(ctx context.Context, c client.Reader, ctl Controller) (*Mesh, error) {
	m := &Mesh{Settings: "the defaults (the controller's Deployment " + ctl.Namespace + "/" + ctl.Deployment + " cannot be read)"}
	in := mesh.Input{MeshNamespace: ctl.Namespace, TrustDomain: wire.DefaultTrustDomain}
	var dep appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: ctl.Namespace, Name: ctl.Deployment}, &dep); err == nil {
		flags := controllerFlags(&dep)
		in.MeshNamespace = flagOr(flags, "mesh-namespace", ctl.Namespace)
		in.TrustDomain = flagOr(flags, "trust-domain", wire.DefaultTrustDomain)
		d, err := wire.ParseDefaultInbound(flags["default-inbound"])
		if err != nil {
			return nil, fmt.Errorf("the controller's --default-inbound: %w", err)
		}
		in.DefaultInbound = d
		m.Settings = "the controller's Deployment " + ctl.Namespace + "/" + ctl.Deployment
	}
	in.MeshNamespace = cmp.Or(in.MeshNamespace, wire.DefaultMeshNamespace)
	if err := watch.List(ctx, c, &in); err != nil {
		return nil, fmt.Errorf("reading the mesh's objects: %w", err)
	}
	m.Input, m.Model = in, mesh.Build(in)
	return m, nil
}
