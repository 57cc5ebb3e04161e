package domain

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits on free-form fields.
const (
	MaxNameLen        = 200
	MaxReferenceLen   = 200
	MaxDescriptionLen = 1000
	MaxMetadataKeys   = 50
	MaxMetadataKeyLen = 40
	MaxMetadataValLen = 500
)

// iso4217 lists the active ISO 4217 currency codes.
var iso4217 = func() map[string]bool {
	m := map[string]bool{}
	for _, c := range strings.Fields(`AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV
		BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
		FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD
		KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD
		OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL
		THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD
		XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWG ZWL`) {
		m[c] = true
	}
	return m
}()

// CheckCurrency reports a problem with an ISO 4217 code, or "".
func CheckCurrency(c string) string {
	switch {
	case c == "":
		return "is required"
	case !iso4217[c]:
		return "must be an upper-case ISO 4217 currency code such as USD"
	}
	return ""
}

// CheckAmount reports a problem with an amount in minor units, or "".
func CheckAmount(a int64) string {
	switch {
	case a <= 0:
		return "must be a positive integer in minor units"
	case a > MaxAmount:
		return fmt.Sprintf("must be at most %d", MaxAmount)
	}
	return ""
}

// CheckText reports a problem with an optional free-text field, or "".
func CheckText(s *string, max int) string {
	switch {
	case s == nil:
		return ""
	case utf8.RuneCountInString(*s) > max:
		return fmt.Sprintf("must be at most %d characters", max)
	case strings.ContainsRune(*s, 0):
		return "must not contain the NUL character"
	}
	return ""
}

// CheckMetadata returns the problems of a metadata map, field names included.
func CheckMetadata(field string, md map[string]string) []FieldError {
	var errs []FieldError
	if len(md) > MaxMetadataKeys {
		errs = append(errs, FieldError{field, fmt.Sprintf("must have at most %d keys", MaxMetadataKeys)})
	}
	for k, v := range md {
		switch {
		case k == "" || utf8.RuneCountInString(k) > MaxMetadataKeyLen:
			errs = append(errs, FieldError{field + "." + k, fmt.Sprintf("keys must be 1 to %d characters", MaxMetadataKeyLen)})
		case strings.ContainsRune(k, 0):
			errs = append(errs, FieldError{field, "keys must not contain the NUL character"})
		default:
			if msg := CheckText(&v, MaxMetadataValLen); msg != "" {
				errs = append(errs, FieldError{field + "." + k, msg})
			}
		}
	}
	return errs
}
