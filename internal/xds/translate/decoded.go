package translate

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// decoded remembers the message behind each Any that translation packed,
// so that checking references reads the very message that was marshaled
// instead of unmarshaling it again. A nil decoded remembers nothing.
type decoded map[*anypb.Any]proto.Message

// pack marshals m into an Any and remembers m.
func (d decoded) pack(m proto.Message) (*anypb.Any, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	if d != nil {
		d[a] = m
	}
	return a, nil
}

// unpack returns a's message as a T: the remembered one, or one
// unmarshaled.
func unpack[T proto.Message](d decoded, a *anypb.Any, fresh T) (T, error) {
	if m, ok := d[a].(T); ok {
		return m, nil
	}
	if err := a.UnmarshalTo(fresh); err != nil {
		return fresh, err
	}
	return fresh, nil
}

// chainConfigs gathers what every service's outbound filter chains packed.
func (sh *Shared) chainConfigs() decoded {
	d := decoded{}
	for _, out := range sh.services {
		for a, m := range out.decoded {
			d[a] = m
		}
	}
	return d
}
