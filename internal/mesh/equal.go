package mesh

import (
	"maps"
	"reflect"
	"slices"
)

// Equal says whether two services are the same in every field, so that
// whatever was made from one serves for the other.
func (s *Service) Equal(o *Service) bool {
	if s == o {
		return true
	}
	if s == nil || o == nil {
		return false
	}
	return s.Namespace == o.Namespace && s.Name == o.Name && s.Host == o.Host && s.ServiceName == o.ServiceName &&
		s.Generation == o.Generation && s.DefaultInbound == o.DefaultInbound &&
		slices.Equal(s.ClusterIPs, o.ClusterIPs) && slices.Equal(s.Ports, o.Ports) &&
		slices.EqualFunc(s.Endpoints, o.Endpoints, Endpoint.Equal) && slices.EqualFunc(s.Starting, o.Starting, Endpoint.Equal) &&
		// Subsets and policies are small API values with pointers inside.
		reflect.DeepEqual(s.Subsets, o.Subsets) && reflect.DeepEqual(s.Policies, o.Policies) &&
		reflect.DeepEqual(s.Allow, o.Allow)
}

// Equal says whether two endpoints are the same.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.Address == o.Address && e.Pod == o.Pod && e.Zone == o.Zone && e.Region == o.Region && e.Ready == o.Ready &&
		e.Terminating == o.Terminating && maps.Equal(e.Ports, o.Ports) && maps.Equal(e.Labels, o.Labels) &&
		e.Identity == o.Identity && e.MTLS == o.MTLS && maps.Equal(e.PortMTLS, o.PortMTLS) && e.ModeBy == o.ModeBy
}
