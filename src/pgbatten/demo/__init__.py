"""``pgbatten demo``: watch an eavesdropper read a card number, then watch ``secure`` take it away."""
